import numpy as np
import pytest

from distmeta.errors import ConfigError
from distmeta.tasks import eval_task_rng, train_task_rng
from distmeta.tasks.sinusoid import Sinusoid


def fit_sinusoid(x, y):
    """Amplitude and phase of y = A sin(x - phase) by least squares on sin x and cos x."""
    basis = np.column_stack([np.sin(x), np.cos(x)])
    (a, b), *_ = np.linalg.lstsq(basis, y, rcond=None)
    residual = np.abs(basis @ np.array([a, b]) - y).max()
    return np.hypot(a, b), np.arctan2(-b, a), residual


def test_tasks_follow_the_maml_distribution():
    family = Sinusoid(k_support=10, k_query=10)
    amplitudes, phases = [], []
    for i in range(400):
        task = family.sample_task(train_task_rng(0, 0, i), "train")
        assert task["support_x"].shape == (10, 1) and task["query_y"].shape == (10, 1)
        x = np.concatenate([task["support_x"], task["query_x"]])[:, 0]
        y = np.concatenate([task["support_y"], task["query_y"]])[:, 0]
        assert x.min() >= -5 and x.max() <= 5
        amplitude, phase, residual = fit_sinusoid(x.astype(np.float64), y.astype(np.float64))
        assert residual < 1e-4  # support and query lie on one sinusoid
        amplitudes.append(amplitude)
        phases.append(phase)
    amplitudes, phases = np.array(amplitudes), np.array(phases)
    assert amplitudes.min() >= 0.1 - 1e-4 and amplitudes.max() <= 5 + 1e-4
    assert phases.min() >= -1e-4 and phases.max() <= np.pi + 1e-4
    # Uniform draws fill their ranges: 400 draws leave no gap wider than ~5% at either end.
    assert amplitudes.min() < 0.4 and amplitudes.max() > 4.7
    assert phases.min() < 0.2 and phases.max() > np.pi - 0.2


def test_same_seed_same_task_other_seed_other_task():
    family = Sinusoid()
    a = family.sample_task(train_task_rng(1, 2, 3), "train")
    b = family.sample_task(train_task_rng(1, 2, 3), "train")
    c = family.sample_task(train_task_rng(1, 2, 4), "train")
    d = family.sample_task(eval_task_rng(1, "test", 3), "test")
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["support_x"], c["support_x"])
    assert not np.array_equal(a["support_x"], d["support_x"])


def test_sample_stacks_a_task_axis():
    batch = Sinusoid(k_support=4, k_query=7).sample([train_task_rng(0, 0, i) for i in range(3)], "train")
    assert batch["support_x"].shape == (3, 4, 1) and batch["query_y"].shape == (3, 7, 1)


@pytest.mark.parametrize("field", ["k_support", "k_query"])
def test_bad_sizes_name_the_field(field):
    with pytest.raises(ConfigError, match=f"^task.{field}: got 0"):
        Sinusoid(**{field: 0})
