import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def omniglot_dir() -> Path:
    """Real Omniglot (npz + official zips) beside the checkout; DISTMETA_OMNIGLOT overrides."""
    path = Path(os.environ.get("DISTMETA_OMNIGLOT", REPO.parent / "shared" / "data" / "omniglot"))
    if not (path / "images_background.npz").is_file():
        pytest.fail(f"Omniglot test data missing at {path}; set DISTMETA_OMNIGLOT")
    return path


@pytest.fixture(scope="session")
def ray_local():
    """One real local Ray (2 CPUs, no dashboard) shared by the tests that need actors."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    yield ray
    ray.shutdown()


@pytest.fixture()
def sine_config():
    """A small, fast sinusoid MAML config; `sine_config(key=value, ...)` overrides keys."""
    from distmeta.config import Config, apply_overrides

    base = {
        "seed": 3, "iterations": 10, "meta_batch_size": 5, "num_workers": 0,
        "checkpoint_every": 5,
        "task": {"family": "sinusoid", "k_support": 5, "k_query": 5},
        "model": {"name": "mlp", "hidden_sizes": [16, 16]},
        "algorithm": {"name": "maml", "inner_lr": 0.02, "outer_lr": 0.01},
    }

    def make(**overrides):
        return Config.from_dict(apply_overrides(base, [f"{k}={v}" for k, v in overrides.items()]))

    return make


@pytest.fixture(scope="session")
def nav2d_run(tmp_path_factory):
    """A two-iteration meta-RL run (tiny Nav2D) trained through the `distmeta` CLI."""
    from clirun import run

    out = tmp_path_factory.mktemp("nav2d") / "run"
    proc = run("train", "nav2d-maml", "--set", "iterations=2", "--set", "num_workers=0",
               "--set", "meta_batch_size=2", "--set", "rl.episodes_per_task=2",
               "--set", "task.horizon=10", "--set", "model.hidden_sizes=[8]", "--out", out)
    assert "done: 2 iterations, return pre-adaptation" in proc.stdout
    return out
