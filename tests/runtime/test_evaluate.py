"""Evaluation's interval: Student's t quantile behind the 95% half-width."""

import numpy as np
import pytest

from distmeta.runtime.evaluate import summarise, t_quantile

# Two-sided 95% critical values of Student's t, as printed in statistics tables.
TABLE = {1: 12.706, 2: 4.303, 3: 3.182, 5: 2.571, 10: 2.228, 30: 2.042, 120: 1.980, 10**9: 1.960}


@pytest.mark.parametrize("df", sorted(TABLE))
def test_t_quantile_matches_the_printed_table(df):
    assert t_quantile(0.975, df) == pytest.approx(TABLE[df], abs=5e-4)


def test_t_quantile_matches_scipy_closely():
    stats = pytest.importorskip("scipy.stats")
    for df in (1, 2, 4, 7, 19, 99, 599, 10**5):
        for p in (0.9, 0.975, 0.995):
            assert t_quantile(p, df) == pytest.approx(stats.t.ppf(p, df), rel=1e-9), (df, p)


def test_summary_of_3_tasks_uses_t_with_2_degrees_of_freedom():
    values = np.array([1.0, 2.0, 4.0])
    summary = summarise(values)
    assert summary["mean"] == pytest.approx(7 / 3)
    assert summary["ci95"] == pytest.approx(4.3027 * values.std(ddof=1) / np.sqrt(3), rel=1e-4)
    assert summarise(np.array([5.0]))["ci95"] is None
