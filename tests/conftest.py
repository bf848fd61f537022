"""Fixtures, and the test tiers (markers registered in pyproject.toml):

- `ray`: starts real Ray processes (a local Ray, actors, a CLI run with workers);
- `tune`: runs Ray Tune searches;
- `cluster`: several raylets on this machine (`ray.cluster_utils.Cluster`);
- `slow`: a test of 10 s or more without Ray (Meta-World ML10, a killed driver process).

`pytest -m "not ray and not tune and not cluster and not slow"` is the fast tier."""

import os
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Omniglot's resized-image cache: one per test session (the first load decodes, the rest
# read it), so runs do not depend on what an earlier session left in ~/.cache. Set before
# any Ray or subprocess starts, which inherit it; pytest-xdist's worker processes keep the
# folder their controller made, so that the session decodes once.
if not (os.environ.get("PYTEST_XDIST_WORKER") and os.environ.get("DISTMETA_CACHE_DIR")):
    os.environ["DISTMETA_CACHE_DIR"] = tempfile.mkdtemp(prefix="distmeta-test-cache-")
# Ray's files (sessions, sockets, and `ray_current_cluster`, which a `Cluster` writes and a
# bare `ray.init()` connects to) in a folder of this process's own, so that test processes
# run side by side (`pytest -n 2`) never join each other's Ray. Short: socket paths are
# limited to 107 bytes.
os.environ["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="dmray-", dir="/tmp")


TIER_ORDER = ("tune", "cluster", "ray", "slow")


def pytest_collection_modifyitems(items):
    """A test that uses the shared local Ray is in the `ray` tier. Modules run heaviest tier
    first (a module as a block, so its fixtures are made once): pytest-xdist hands each
    process a contiguous part of the list and lets an idle one take from another's end, so
    a long Tune search left for last would keep one core busy while the other waits."""
    for item in items:
        if "ray_local" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.ray)

    def rank(item) -> int:
        return min((TIER_ORDER.index(m.name) for m in item.iter_markers() if m.name in TIER_ORDER),
                   default=len(TIER_ORDER))

    module_rank: dict[str, int] = {}
    for item in items:
        module_rank[item.module.__name__] = min(module_rank.get(item.module.__name__, len(TIER_ORDER)), rank(item))
    order = {id(item): i for i, item in enumerate(items)}
    items.sort(key=lambda item: (module_rank[item.module.__name__], order[id(item)]))


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

    # Not forwarding workers' output: a worker of one test (an idle one Ray kills, printing a
    # traceback as it goes) would print into whichever later test is capturing this
    # process's stderr. Workers' errors still reach the tests as exceptions.
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
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
