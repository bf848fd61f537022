"""Train configs from YAML, presets and --set (distmeta.loading, distmeta.config): every
field checked on its own, torch-free."""

import subprocess
import sys

import pytest
import yaml

from distmeta.config import Config
from distmeta.errors import ConfigError
from distmeta.experiment import build_experiment
from distmeta.loading import apply_overrides, load_config, presets, read_yaml


def test_every_preset_loads_and_builds(omniglot_dir):
    assert {"sinusoid-maml", "omniglot-maml", "omniglot-protonet"} <= set(presets())
    for name in presets():
        cfg = load_config(name, [f"task.data_dir={omniglot_dir}"] if "omniglot" in name else [])
        assert Config.from_dict(cfg.to_dict()) == cfg
        assert build_experiment(cfg).config is cfg


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
    (["seed=abc"], r"^seed: got 'abc'; expected an integer"),
    (["iterations=1.5"], r"^iterations: got 1.5; expected an integer"),
    (["algorithm.first_order=maybe"], r"^algorithm.first_order: got 'maybe'; expected true or false"),
    (["algorithm.inner_lr=0"], r"^algorithm.inner_lr: got 0.0; expected a value > 0"),
    (["algorithm.outer_lr=-1"], r"^algorithm.outer_lr: got -1.0; expected a value > 0"),
    (["algorithm.inner_lr=.nan"], r"^algorithm.inner_lr: got nan; expected a finite number"),
    (["algorithm.name=mamll"], r"^algorithm.name: got 'mamll'; expected one of: maml, "),
    (["algorithm.inner_steps=0"], r"^algorithm.inner_steps: got 0; expected an integer >= 1"),
    (["model.hidden_sizes=[]"], r"^model.hidden_sizes: got \[\]"),
    (["num_workers=-1"], r"^num_workers: got -1"),
    (["num_workers=30"], r"^num_workers: got 30 for meta_batch_size 25"),
    (["meta_batch_size=0"], r"^meta_batch_size: got 0; expected a value > 0"),
    (["runtime.shards=0"], r"^runtime.shards: got 0; expected a value > 0"),
    (["runtime.threads=0"], r"^runtime.threads: got 0; expected a value > 0"),
    (["runtime.shards=26"], r"^runtime.shards: got 26 for meta_batch_size 25; expected at most one shard per task"),
    (["runtime.shards=1"], r"^runtime.shards: got 1 for num_workers 2; expected at least one shard per worker"),
    (["runtime.shards=two"], r"^runtime.shards: got 'two'; expected an integer"),
    (["task=3"], r"^task: expected a mapping"),
    (["seed"], r"^--set: got 'seed'; expected KEY=VALUE"),
    (["seed.x=1"], r"^--set seed.x: 'seed' is a value, not a section"),
])
def test_bad_values_fail_with_one_line_naming_the_field(override, message):
    with pytest.raises(ConfigError, match=message) as info:
        load_config("sinusoid-maml", override)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("overrides, size", [
    (["num_workers=0"], 20), (["num_workers=2"], 10), (["num_workers=3"], 7),
    (["num_workers=2", "runtime.shards=4"], 5),
])
def test_shard_size_is_the_largest_shard_of_a_meta_batch(overrides, size):
    """Evaluation sends this many tasks per call: what a training shard holds."""
    assert load_config("ml10-maml", ["meta_batch_size=20", *overrides]).shard_size == size


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


def test_apply_overrides_leaves_the_input_alone():
    raw = {"algorithm": {"inner_lr": 0.1}}
    out = apply_overrides(raw, ["algorithm.inner_lr=0.2"])
    assert raw["algorithm"]["inner_lr"] == 0.1 and out["algorithm"]["inner_lr"] == 0.2


def test_loading_a_config_imports_neither_torch_nor_ray():
    """What makes `distmeta --help`, `presets` and a bad key answer at once."""
    code = ("import sys; from distmeta.loading import load_config; import distmeta, distmeta.cli; "
            "load_config('sinusoid-maml', ['seed=3']); "
            "print(sorted(m for m in ('torch', 'ray') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_hostile_configs_are_one_line_at_once(tmp_path):
    """A YAML alias bomb (in a file or through --set), a binary file, absurd nesting, a huge
    integer and an enormous --set value: one line each, in well under a second."""
    import time

    laughs = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(9))
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(laughs)
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(bytes(range(256)) * 4)
    nested = tmp_path / "nested.yaml"
    nested.write_text("seed: " + "[" * 100000 + "]" * 100000 + "\n")
    cases = [
        ((str(bomb),), r"^config: cannot read YAML from .*bomb.yaml: an alias \(\*a\); write the value out"),
        (("sinusoid-maml", ["model.hidden_sizes=&a [1, *a]"]), r"^--set model.hidden_sizes: an alias \(\*a\)"),
        ((str(binary),), r"^config: cannot read YAML from .*binary.yaml: "),
        ((str(nested),), r"^config: cannot read YAML from .*nested.yaml: nested too deeply"),
        (("sinusoid-maml", ["seed=123456789012345678901234567890"]), (r"^seed: got an integer of 30 digits; "
                                                                   r"expected one below 2\*\*63$")),
        (("sinusoid-maml", ["seed=" + "9" * 20000]), r"^--set seed: a value of 20000 characters"),
    ]
    for args, message in cases:
        start = time.perf_counter()
        with pytest.raises(ConfigError, match=message) as info:
            load_config(*args)
        assert time.perf_counter() - start < 30 and "\n" not in str(info.value) and len(str(info.value)) < 400
