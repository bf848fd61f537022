"""The search's schedulers: PBT's explore step kept inside the searched ranges."""

from distmeta.search.schedulers import ClipToSpace
from distmeta.search.space import Distribution


def test_pbt_perturbations_stay_in_the_searched_range():
    clip = ClipToSpace({"a": Distribution.parse("a", {"uniform": [0.1, 0.9]}),
                        "n": Distribution.parse("n", {"randint": [1, 4]}),
                        "c": Distribution.parse("c", {"choice": [1, 2]})})
    assert clip({"a": 1.08, "n": 3.6, "c": 2, "other": 5}) == {"a": 0.9, "n": 3, "c": 2, "other": 5}
    assert clip({"a": 0.05, "n": 0.8, "c": 1}) == {"a": 0.1, "n": 1, "c": 1}
    assert clip({"a": 0.5, "n": 2, "c": 1}) == {"a": 0.5, "n": 2, "c": 1}
