"""The one order shard results are added in, wherever they are added."""

import numpy as np

from distmeta.runtime import reduce
from distmeta.runtime.executors import InProcess


def results(n, size=1000):
    return [(np.random.default_rng(i).standard_normal(size, dtype=np.float32), i + 1, {"post_loss": 0.5 * i})
            for i in range(n)]


def test_groups_are_consecutive_shards_of_at_most_group_size():
    assert reduce.group_bounds(1) == [(0, 1)]
    assert reduce.group_bounds(8) == [(0, 8)]
    assert reduce.group_bounds(19) == [(0, 8), (8, 16), (16, 19)]


def test_up_to_a_group_the_sum_is_left_to_right_beyond_it_by_group():
    few = results(8)
    grad, tasks, sums = reduce.add_results(few)
    left_to_right = few[0][0].copy()
    for g, _, _ in few[1:]:
        left_to_right = left_to_right + g
    assert np.array_equal(grad, left_to_right) and tasks == 36 and sums == {"post_loss": 14.0}

    many = results(19)
    by_group = [reduce.add_in_order([r[0] for r in many[lo:hi]]) for lo, hi in ((0, 8), (8, 16), (16, 19))]
    assert np.array_equal(reduce.add_results(many)[0], by_group[0] + by_group[1] + by_group[2])
    assert not np.array_equal(reduce.add_results(many)[0], reduce.add_in_order([r[0] for r in many]))


def test_add_in_order_leaves_its_inputs_alone():
    arrays = [np.ones(3, dtype=np.float32), np.full(3, 2, dtype=np.float32)]
    arrays[0].flags.writeable = False  # as Ray hands them over
    assert np.array_equal(reduce.add_in_order(arrays), np.full(3, 3)) and arrays[0][0] == 1


def test_in_process_adds_in_the_same_order():
    class Runner:
        def meta_grad(self, index):
            return results(index + 1)[index]

    (grad, tasks, _), reissued = InProcess(Runner()).map_sum("meta_grad", [(i,) for i in range(11)])
    assert reissued == 0 and tasks == 66
    assert np.array_equal(grad, reduce.add_results(results(11))[0])
