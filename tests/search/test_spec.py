"""The search config: parsing, defaults, and every bad input as one named error (no Ray)."""

import pytest
import yaml
from conftest import REPO

from distmeta.errors import ConfigError, UserError
from distmeta.search import Distribution, load_search
from distmeta.search.loading import search_from_dict, shipped_configs

BASE = {"seed": 1, "iterations": 40, "meta_batch_size": 4, "num_workers": 0,
        "task": {"family": "sinusoid", "k_support": 5, "k_query": 5},
        "model": {"name": "mlp", "hidden_sizes": [8]}}


def spec(overrides=(), **raw):
    doc = {"base": BASE, "search_space": {"algorithm.inner_lr": {"loguniform": [0.001, 0.1]}}, **raw}
    return search_from_dict(doc, list(overrides))


def test_every_shipped_config_is_valid(omniglot_dir):
    names = set(shipped_configs())
    assert {"sinusoid_maml_asha", "omniglot_protonet_optuna", "nav2d_maml_pbt", "halfcheetah_vel_maml"} <= names
    searchers = set()
    for name, path in shipped_configs().items():
        extra = [f"fixed.task.data_dir={omniglot_dir}"] if "omniglot" in name else []
        loaded = load_search(str(path), extra)
        assert loaded.train_config().iterations == loaded.max_iterations
        searchers.add((loaded.searcher, loaded.scheduler.name))
    assert {s for s, _ in searchers} == {"random", "optuna", "hyperopt"}
    assert {s for _, s in searchers} >= {"asha", "pbt"}


def test_a_shipped_config_loads_by_name():
    assert load_search("sinusoid_maml_asha").scheduler.name == "asha"


def test_nested_and_dotted_keys_and_set_overrides():
    s = spec(["num_samples=2", "fixed.algorithm.outer_lr=0.02", "scheduler=asha",
              "search_space.algorithm.inner_steps={randint: [1, 3]}"],
             fixed={"algorithm": {"outer_lr": 0.5}}, search_space={"algorithm": {"inner_lr": {"uniform": [0.01, 0.1]}}})
    assert s.num_samples == 2 and s.scheduler.name == "asha"
    assert s.fixed == {"algorithm.outer_lr": 0.02}  # --set wins over the file's nested key
    assert set(s.space) == {"algorithm.inner_lr", "algorithm.inner_steps"}
    trial = s.train_config({"algorithm.inner_lr": 0.05, "algorithm.inner_steps": 2})
    assert (trial.algorithm.inner_lr, trial.algorithm.inner_steps, trial.algorithm.outer_lr) == (0.05, 2, 0.02)


def test_a_searched_inner_steps_is_scored_with_as_many_steps_unless_eval_steps_is_given():
    shipped = load_search("sinusoid_maml_asha")  # its base fixes eval_inner_steps: 1
    assert shipped.train_config({"algorithm.inner_steps": 3}).algorithm.steps_for_eval == 3
    fixed = load_search("sinusoid_maml_asha", ["fixed.algorithm.eval_inner_steps=5"])
    assert fixed.train_config({"algorithm.inner_steps": 3}).algorithm.steps_for_eval == 5
    lr_only = spec(base={**BASE, "algorithm": {"eval_inner_steps": 2}})
    assert lr_only.train_config({"algorithm.inner_lr": 0.05}).algorithm.eval_inner_steps == 2  # the base's


def test_defaults_by_family_and_validation():
    assert spec().objective() == ("post_adaptation.loss", "min")
    assert spec(validation={"tasks": 10}).objective() == ("val.post_adaptation.loss", "min")
    assert spec(metric="post_adaptation.loss", mode="max").objective() == ("post_adaptation.loss", "max")
    rl = load_search("nav2d_maml_pbt", ["metric=null", "mode=null"])
    assert rl.objective() == ("post_adaptation.return", "max")
    assert spec(max_iterations=None).iterations() == 40
    asha = spec(scheduler={"name": "asha"}, max_iterations=400)
    assert asha.grace_period(400) == 50


def test_distributions_extremes_and_tune_domains():
    assert Distribution.parse("k", {"randint": [1, 4]}).extremes() == (1, 3)
    assert Distribution.parse("k", {"choice": [1, 2]}).to_mutation() == [1, 2]
    domain = Distribution.parse("k", {"loguniform": [0.01, 1.0]}).to_tune()
    assert 0.01 <= domain.sample() <= 1.0


def test_relative_base_is_found_beside_the_search_file(tmp_path):
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(BASE))
    (tmp_path / "search.yaml").write_text(yaml.safe_dump(
        {"base": "train.yaml", "search_space": {"seed": {"grid": [1, 2]}}}))
    s = load_search(str(tmp_path / "search.yaml"))
    assert s.base == str(tmp_path / "train.yaml") and s.train_config().iterations == 40


BAD = [
    ({"search_space": {"algorithm.inner_lrr": {"uniform": [0.1, 0.2]}}}, [],
     "search_space.algorithm.inner_lrr: unknown key 'algorithm.inner_lrr'"),
    ({"search_space": {"algorithm.first_order": {"choice": []}}}, [],
     "search_space.algorithm.first_order.choice: empty"),
    ({"search_space": {"algorithm.inner_lr": {"uniform": [0.2, 0.1]}}}, [],
     "search_space.algorithm.inner_lr.uniform: low 0.2 >= high 0.1"),
    ({"search_space": {"algorithm.inner_lr": {"loguniform": [0, 0.1]}}}, [], "expected low > 0"),
    ({"search_space": {"algorithm.inner_lr": {"normal": [0, 1]}}}, [], "unknown distribution 'normal'"),
    ({"search_space": {"algorithm.inner_lr": 0.1}}, [], "expected one distribution"),
    ({"search_space": {"algorithm.inner_steps": {"randint": [1.5, 3]}}}, [], "expected two integers"),
    ({"search_space": {"algorithm.inner_lr": {"uniform": [-1, 0.1]}}}, [],
     "search_space.algorithm.inner_lr: algorithm.inner_lr: got -1"),
    ({"search_space": {}}, [], "search_space: empty"),
    ({}, ["searcher=bayes"], "searcher: got 'bayes'; expected one of: random, optuna, hyperopt"),
    ({"search_space": {"seed": {"grid": [1, 2]}}}, ["searcher=optuna"], "grid needs searcher random"),
    ({}, ["scheduler=hyperband"], "scheduler.name: got 'hyperband'"),
    ({}, ["scheduler=pbt", "searcher=optuna"], "PBT explores by itself"),
    ({"search_space": {"model.hidden_sizes": {"choice": [[8], [16]]}}}, ["scheduler=pbt"],
     "scheduler.mutations: empty; PBT needs at least one search_space key it can change"),
    ({"search_space": {"num_workers": {"choice": [0, 1]}, "algorithm.inner_lr": {"uniform": [0.01, 0.1]}}},
     ["scheduler=pbt"], "search_space.num_workers: PBT copies a donor trial's num_workers"),
    ({}, ["scheduler=pbt", "scheduler.reduction_factor=2"], "scheduler.reduction_factor: set for scheduler pbt; only asha"),
    ({}, ["scheduler.quantile_fraction=0.3"], "scheduler.quantile_fraction: set for scheduler fifo; only pbt"),
    ({"search_space": {"meta_batch_size": {"uniform": [2, 4]}}}, [],
     "search_space.meta_batch_size: meta_batch_size: got 2.63"),
    ({"search_space": {"num_workers": {"choice": [0, 4]}, "meta_batch_size": {"choice": [4, 2]}}}, [],
     "search_space: num_workers: got 4 for meta_batch_size 2"),
    ({"search_space": {"runtime.resources_per_worker.cpu": {"choice": [1, 2]}}}, [],
     "search_space.runtime.resources_per_worker.cpu: a trial's placement group is sized from resources"),
    ({"base": {**BASE, "colour": 1}}, [], "base: unknown key 'colour'"),
    ({}, ["scheduler=pbt", "scheduler.mutations=[model.hidden_sizes]"], "is not in search_space"),
    ({}, ["scheduler=asha", "scheduler.grace_period=40"], "scheduler.grace_period: 40 (at least report_every)"),
    ({}, ["metric=accuracy"], "metric: got 'accuracy'; expected one of"),
    ({}, ["metric=val.post_adaptation.loss"], "metric: got 'val.post_adaptation.loss'"),
    ({}, ["mode=maximise"], "mode: got 'maximise'"),
    ({}, ["num_samples=0"], "num_samples: got 0"),
    ({}, ["report_every=50"], "report_every: got 50, above max_iterations 40"),
    ({}, ["colour=blue"], "unknown key 'colour'"),
    ({"search_space": {"iterations": {"grid": [1, 2]}}}, [], "use max_iterations instead"),
    ({"fixed": {"num_workers": 9}}, [], "fixed: num_workers: got 9 for meta_batch_size 4"),
    ({}, ["resources.learner_cpu=0"], "resources.learner_cpu: got 0.0"),
    ({}, ["validation.split=dev"], "validation.split: got 'dev'"),
]


@pytest.mark.parametrize(("raw", "overrides", "message"), BAD, ids=[m[:40] for _, _, m in BAD])
def test_bad_search_configs_name_the_key(raw, overrides, message):
    with pytest.raises(ConfigError) as info:
        spec(overrides, **raw)
    text = str(info.value)
    assert message in text and "\n" not in text


def test_validating_on_characters_the_base_trains_on_is_refused(omniglot_dir):
    doc = {"base": "omniglot-protonet", "fixed": {"task.data_dir": str(omniglot_dir)},
           "search_space": {"algorithm.outer_lr": {"loguniform": [0.0001, 0.003]}},
           "validation": {"tasks": 10, "split": "val"}}
    with pytest.raises(UserError, match=r"^validation\.split: got 'val'; task\.trainval trains on the val"):
        search_from_dict(doc)
    search_from_dict({**doc, "fixed": {**doc["fixed"], "task.trainval": False}})
    searched = {**doc["search_space"], "task.trainval": {"choice": [False, True]}}
    with pytest.raises(ConfigError, match=r"^search_space.task.trainval: validation\.split: got 'val'; task\.trainval"):
        search_from_dict({**doc, "fixed": {**doc["fixed"], "task.trainval": False}, "search_space": searched})
    search_from_dict({**doc, "validation": {"tasks": 10, "split": "test"}})


def test_bad_base_and_files(tmp_path):
    with pytest.raises(ConfigError, match="base: missing"):
        search_from_dict({"search_space": {"seed": {"grid": [1]}}})
    with pytest.raises(ConfigError, match="base: 'nope.yaml' is neither a YAML file"):
        search_from_dict({"base": "nope.yaml", "search_space": {"seed": {"grid": [1]}}})
    with pytest.raises(ConfigError, match="tune config: 'missing.yaml' is not a YAML file; shipped configs: "):
        load_search("missing.yaml")
    assert (REPO / "tune_configs" / "README.md").is_file()


@pytest.mark.parametrize("preset,sets", [
    ("sinusoid-maml", ["num_workers=0", "meta_batch_size=2"]),
    ("nav2d-maml", ["num_workers=0", "meta_batch_size=2", "rl.episodes_per_task=2", "task.horizon=10"]),
    pytest.param("ml10-maml", ["num_workers=0", "meta_batch_size=2", "rl.episodes_per_task=1", "task.horizon=3",
                               "model.hidden_sizes=[4]"], marks=pytest.mark.slow),  # validation scores success
])
def test_metric_names_are_what_a_trial_reports(preset, sets):
    from distmeta import MetaLearner, build_experiment, load_config
    from distmeta.search.spec import metric_names
    from distmeta.search.trial import flatten

    config = load_config(preset, sets)
    with MetaLearner(config) as learner:
        reported = flatten(learner.step()) | flatten({"val": learner.validate(2)})
    names = {n.replace(".", "/") for n in metric_names(build_experiment(config), validation=True)}
    assert names == set(reported) - {"iteration", "time_s"}


def test_a_bare_scheduler_name_replaces_the_shipped_section():
    fifo = load_search("sinusoid_maml_asha", ["scheduler=fifo"])
    assert fifo.scheduler.name == "fifo" and fifo.scheduler.grace_period is None
    pbt = load_search("sinusoid_maml_asha", ["scheduler=pbt"])
    assert pbt.mutations() == ["algorithm.inner_lr", "algorithm.outer_lr", "algorithm.inner_steps",
                               "algorithm.first_order"]


def test_trials_never_write_into_the_base_mapping():
    s = spec(["fixed.task.k_query=3"])
    s.train_config({"algorithm.inner_lr": 0.05})
    assert BASE["task"] == {"family": "sinusoid", "k_support": 5, "k_query": 5} and "algorithm" not in BASE
    assert s.train_config().task.options["k_query"] == 3
