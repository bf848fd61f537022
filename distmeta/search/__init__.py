"""Ray Tune searches over meta-hyperparameters: `SearchSpec` (the `tune_configs/*.yaml`
format, validated before Ray starts), `load_search`, and `run_search` (imports Ray)."""

from distmeta.search.loading import load_search
from distmeta.search.space import Distribution
from distmeta.search.spec import SearchSpec

__all__ = ["Distribution", "SearchSpec", "load_search", "run_search"]


def run_search(*args, **kwargs):
    """See `distmeta.search.runner.run_search`."""
    from distmeta.search.runner import run_search as run

    return run(*args, **kwargs)
