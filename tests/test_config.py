import pytest
import yaml

from distmeta.config import Config, apply_overrides, load_config, presets, read_yaml
from distmeta.errors import ConfigError


def test_every_preset_loads(omniglot_dir):
    assert {"sinusoid-maml", "omniglot-maml", "omniglot-protonet"} <= set(presets())
    for name in presets():
        cfg = load_config(name, [f"task.data_dir={omniglot_dir}"] if "omniglot" in name else [])
        assert Config.from_dict(cfg.to_dict()) == cfg


def test_overrides_parse_yaml_values():
    cfg = load_config("sinusoid-maml", ["seed=7", "algorithm.inner_lr=0.05",
                                        "model.hidden_sizes=[10, 20]", "algorithm.first_order=true",
                                        "task.k_support=5", "runtime.resources_per_worker.cpu=0.5"])
    assert cfg.seed == 7 and cfg.algorithm.inner_lr == 0.05 and cfg.algorithm.first_order
    assert cfg.model.hidden_sizes == (10, 20) and cfg.task.options["k_support"] == 5
    assert cfg.runtime.resources_per_worker.cpu == 0.5
    # YAML 1.1 reads 1e-3 as a string; a float field takes it as the number it spells.
    assert load_config("sinusoid-maml", ["algorithm.outer_lr=1e-3"]).algorithm.outer_lr == 1e-3


def test_yaml_round_trip(tmp_path):
    cfg = load_config("sinusoid-maml", ["algorithm.name=metasgd", "algorithm.grad_clip=10"])
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    assert load_config(str(path)) == cfg


@pytest.mark.parametrize("override, message", [
    (["foo=1"], r"^unknown key 'foo'; expected one of: seed, "),
    (["algorithm.lr=1"], r"^unknown key 'algorithm.lr'"),
    (["runtime.resources_per_worker.tpu=1"], r"^unknown key 'runtime.resources_per_worker.tpu'"),
    (["task.k_shot=1"], r"^unknown key 'task.k_shot'"),
    (["seed=abc"], r"^seed: got 'abc'; expected an integer"),
    (["iterations=1.5"], r"^iterations: got 1.5; expected an integer"),
    (["algorithm.first_order=maybe"], r"^algorithm.first_order: got 'maybe'; expected true or false"),
    (["algorithm.inner_lr=0"], r"^algorithm.inner_lr: got 0.0; expected a value > 0"),
    (["algorithm.outer_lr=-1"], r"^algorithm.outer_lr: got -1.0; expected a value > 0"),
    (["algorithm.inner_lr=.nan"], r"^algorithm.inner_lr: got nan; expected a finite number"),
    (["algorithm.name=mamll"], r"^algorithm.name: got 'mamll'; expected one of: maml, "),
    (["algorithm.inner_steps=0"], r"^algorithm.inner_steps: got 0; expected an integer >= 1"),
    (["algorithm.name=protonet"], r"^algorithm.name: protonet needs a classification task family"),
    (["model.hidden_sizes=[]"], r"^model.hidden_sizes: got \[\]"),
    (["num_workers=-1"], r"^num_workers: got -1"),
    (["num_workers=30"], r"^num_workers: got 30 for meta_batch_size 25"),
    (["meta_batch_size=0"], r"^meta_batch_size: got 0; expected a value > 0"),
    (["task=3"], r"^task: expected a mapping"),
    (["task.family=nope"], r"^task.family: got 'nope'; expected one of sinusoid, omniglot"),
    (["task.family=nomodule_xyz:Fam"], r"^task.family: cannot import module 'nomodule_xyz'"),
    (["task.family=custom_family:Missing"], r"^task.family: module 'custom_family' has no 'Missing'"),
    (["task.family=custom_family:NotAFamily"], r"^task.family: 'custom_family:NotAFamily' is not a subclass"),
    (["seed"], r"^--set: got 'seed'; expected KEY=VALUE"),
    (["seed.x=1"], r"^--set seed.x: 'seed' is a value, not a section"),
])
def test_bad_values_fail_with_one_line_naming_the_field(override, message):
    with pytest.raises(ConfigError, match=message) as info:
        load_config("sinusoid-maml", override)
    assert "\n" not in str(info.value)


def test_unknown_preset_and_bad_files(tmp_path):
    with pytest.raises(ConfigError, match=r"^config: 'nope' is neither a YAML file nor a preset; presets: "):
        load_config("nope")
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: [1,\n")
    with pytest.raises(ConfigError, match=r"^config: cannot read YAML from .*bad.yaml"):
        read_yaml(str(bad))
    listing = tmp_path / "list.yaml"
    listing.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match=r"^config: .*list.yaml holds a list; expected a mapping"):
        read_yaml(str(listing))


def test_omniglot_options_are_checked_before_any_data_loads(omniglot_dir, tmp_path):
    base = [f"task.data_dir={omniglot_dir}"]
    with pytest.raises(ConfigError, match=r"^task.n_way: got 101; the val split has 100 classes"):
        load_config("omniglot-maml", base + ["task.n_way=101"])
    with pytest.raises(ConfigError, match=r"^task.k_shot \+ task.q_query: got 5 \+ 16 = 21"):
        load_config("omniglot-maml", base + ["task.k_shot=5", "task.q_query=16"])
    with pytest.raises(ConfigError, match=r"^task.data_dir: "):
        load_config("omniglot-maml", [f"task.data_dir={tmp_path / 'none'}"])


def test_user_family_by_dotted_path():
    cfg = Config.from_dict({"task": {"family": "custom_family:Linear", "points": 3}})
    family = cfg.task.make_family()
    assert type(family).__name__ == "Linear" and family.points == 3
    with pytest.raises(ConfigError, match=r"^unknown key 'task.bogus'"):
        Config.from_dict({"task": {"family": "custom_family:Linear", "bogus": 3}})
    with pytest.raises(ConfigError, match=r"^task: Picky\(points=11\) failed: at most 10 points"):
        Config.from_dict({"task": {"family": "custom_family:Picky", "points": 11}})
    with pytest.raises(ConfigError, match=r"^task: Unfinished\(\) failed: Can't instantiate abstract"):
        Config.from_dict({"task": {"family": "custom_family:Unfinished"}})
    # A user's `float | None` field is typed like the config's own Optional fields.
    assert Config.from_dict({"task": {"family": "custom_family:Linear", "noise": 1}}).task.make_family().noise == 1.0
    with pytest.raises(ConfigError, match=r"^task.noise: got 'loud'; expected a number"):
        Config.from_dict({"task": {"family": "custom_family:Linear", "noise": "loud"}})


def test_apply_overrides_leaves_the_input_alone():
    raw = {"algorithm": {"inner_lr": 0.1}}
    out = apply_overrides(raw, ["algorithm.inner_lr=0.2"])
    assert raw["algorithm"]["inner_lr"] == 0.1 and out["algorithm"]["inner_lr"] == 0.2
