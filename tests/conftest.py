"""Fixtures, and the test tiers (markers registered in pyproject.toml):

- `ray`: starts real Ray processes (a local Ray, actors, a CLI run with workers);
- `tune`: runs Ray Tune searches;
- `cluster`: several raylets on this machine (`ray.cluster_utils.Cluster`);
- `slow`: a single test of 20 s or more without Ray (long training, RLlib, subprocess runs).

`pytest -m "not ray and not tune and not cluster and not slow"` is the fast tier."""

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(items):
    """A test that uses the shared local Ray is in the `ray` tier. Under pytest-xdist
    (`-n 2 --dist loadgroup`) every test of the ray, tune and cluster tiers is in one group:
    they run one after another in one worker, never two Ray-heavy tests at once on 2 cores,
    while the other worker takes the rest."""
    for item in items:
        if "ray_local" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.ray)
        if any(item.get_closest_marker(tier) for tier in ("ray", "tune", "cluster")):
            item.add_marker(pytest.mark.xdist_group("ray"))


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
    from helpers import sine_config

    return sine_config


@pytest.fixture(scope="session")
def nav2d_run(tmp_path_factory):
    """A two-iteration meta-RL run (tiny Nav2D) trained through the `distmeta` CLI."""
    from helpers import cli

    out = tmp_path_factory.mktemp("nav2d") / "run"
    result = cli("train", "nav2d-maml", "--set", "iterations=2", "--set", "num_workers=0",
                 "--set", "meta_batch_size=2", "--set", "rl.episodes_per_task=2",
                 "--set", "task.horizon=10", "--set", "model.hidden_sizes=[8]", "--out", out)
    assert result.returncode == 0, result.stderr
    assert "done: 2 iterations, return pre-adaptation" in result.stdout
    return out
