"""Conv4's BatchNorm initial scale (`model.batch_norm_init`): the only parameters it changes,
their range, and its errors."""

import pytest
import torch

from distmeta.errors import ConfigError
from distmeta.experiment import build_experiment
from distmeta.loading import load_config


def _initial(omniglot_dir, *overrides):
    config = load_config("omniglot-protonet", [f"task.data_dir={omniglot_dir}", "model.channels=8", *overrides])
    return build_experiment(config).initial_meta_params()


def test_uniform_batch_norm_init_draws_only_the_batch_norm_scales(omniglot_dir):
    ones = _initial(omniglot_dir, "model.batch_norm_init=ones")
    uniform = _initial(omniglot_dir, "model.batch_norm_init=uniform")
    scales = [k for k in ones if k.startswith("body.") and k.endswith(".weight") and ones[k].dim() == 1]
    assert len(scales) == 4
    for k in ones:
        if k in scales:
            assert torch.equal(ones[k], torch.ones_like(ones[k]))
            assert 0 <= uniform[k].min() and uniform[k].max() < 1 and uniform[k].std() > 0.1
        else:  # convolutions and shifts: drawn as without the option
            assert torch.equal(ones[k], uniform[k]), k
    again = _initial(omniglot_dir)  # the preset's: Snell's (PyTorch 0.4's) initialisation
    assert all(torch.equal(uniform[k], again[k]) for k in uniform)  # a function of the seed
    other_seed = _initial(omniglot_dir, "model.batch_norm_init=uniform", "seed=1")
    assert not torch.equal(uniform[scales[0]], other_seed[scales[0]])


@pytest.mark.parametrize("preset, overrides, message", [
    ("sinusoid-maml", ["model.batch_norm_init=normal"], "model.batch_norm_init"),
    ("sinusoid-maml", ["model.batch_norm_init=uniform"], "model.batch_norm_init: uniform needs a model with BatchNorm"),
    ("nav2d-maml", ["model.batch_norm_init=uniform"], "model.batch_norm_init: uniform is for Conv4's BatchNorm"),
])
def test_batch_norm_init_errors_name_the_key(preset, overrides, message):
    with pytest.raises(ConfigError, match=message):
        build_experiment(load_config(preset, overrides))
