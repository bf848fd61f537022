"""Networks as plain `nn.Module`s. They are templates for `torch.func.functional_call`:
parameters live in dicts outside the module, which is never cloned or mutated.

Every model names its final layer `head` (absent for embedding models such as ProtoNets'),
which is what ANIL adapts, and says which task batching ran faster for it (`preferred_batching`,
measured in BENCHMARKS.md)."""

from __future__ import annotations

import math

from torch import nn

from distmeta.config import ModelConfig
from distmeta.errors import ConfigError


class MLP(nn.Module):
    """Fully connected ReLU network, e.g. 1-40-40-1 for sinusoid regression."""

    preferred_batching = "vmap"

    def __init__(self, in_features: int, hidden_sizes: tuple[int, ...], out_features: int | None):
        super().__init__()
        layers, width = [], in_features
        for h in hidden_sizes:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        self.body = nn.Sequential(nn.Flatten(), *layers)
        self.head = nn.Linear(width, out_features) if out_features else None
        self.embedding_dim = width

    def forward(self, x):
        z = self.body(x)
        return self.head(z) if self.head is not None else z


class Conv4(nn.Module):
    """The standard few-shot backbone: 4 x [conv3x3, BatchNorm, max-pool 2, ReLU], or with
    `downsample="strided"` 4 x [conv3x3 stride 2, BatchNorm, ReLU] and a mean over the last
    block's positions (Finn et al.'s Omniglot model; TensorFlow's SAME padding, which pads
    the bottom and right one row more than the top and left when the total is odd).

    BatchNorm uses the statistics of the batch it sees (no running averages), as in MAML:
    there are no buffers to carry between tasks and evaluation sees the same normalisation.
    With `model.batch_norm: population` evaluation uses a copy built with
    `population_stats=True` in eval mode, given fixed statistics as buffers (the shard
    runner's `test_buffers`); training is the same either way.
    Its scale and shift are ordinary parameters, which the inner loop adapts. Pooling before
    the ReLU gives the same outputs and gradients as the usual order (ReLU is monotone) on a
    quarter of the elements.

    Exactness of the second-order meta-gradient (float64 finite differences, tests/algorithms):
    right when tasks are batched the ways distmeta batches them, a loop over tasks or a `vmap`
    of per-task `grad`s. With torch 2.13, one `grad` of a `vmap`ped loss through BatchNorm's
    adapted (batched) scale is wrong (up to 2e-2 relative in float64); take per-task `grad`s
    with this model in your own code too."""

    preferred_batching = "loop"

    def __init__(self, in_channels: int, image_size: int, channels: int, out_features: int | None,
                 downsample: str = "maxpool", population_stats: bool = False,
                 batch_norm_init: str = "ones"):
        super().__init__()
        # With `population_stats` (the test-time model of `model.batch_norm: population`,
        # used in eval mode) each BatchNorm normalises with statistics given as buffers.
        blocks: list[nn.Module] = []
        c, size = in_channels, image_size
        for _ in range(4):
            if downsample == "strided":
                out = -(-size // 2)
                pad = max((out - 1) * 2 + 3 - size, 0)
                blocks += [nn.ZeroPad2d((pad // 2, pad - pad // 2, pad // 2, pad - pad // 2)),
                           nn.Conv2d(c, channels, 3, stride=2),
                           nn.BatchNorm2d(channels, track_running_stats=population_stats), nn.ReLU()]
            else:
                out = size // 2
                blocks += [nn.Conv2d(c, channels, 3, padding=1),
                           nn.BatchNorm2d(channels, track_running_stats=population_stats), nn.MaxPool2d(2), nn.ReLU()]
            c, size = channels, out
        if downsample == "strided":
            blocks.append(nn.AdaptiveAvgPool2d(1))
            size = 1
        self.body = nn.Sequential(*blocks, nn.Flatten())
        self.embedding_dim = channels * max(size, 1) ** 2
        self.head = nn.Linear(self.embedding_dim, out_features) if out_features else None
        if batch_norm_init == "uniform":
            # Last, so that every other parameter is drawn as with `ones` for the same seed.
            for layer in self.body:
                if isinstance(layer, nn.BatchNorm2d):
                    nn.init.uniform_(layer.weight)

    def forward(self, x):
        z = self.body(x)
        return self.head(z) if self.head is not None else z


def make_model(cfg: ModelConfig, input_shape: tuple[int, ...], out_features: int | None,
               population_stats: bool = False) -> nn.Module:
    """The model for a task family's input shape; `out_features=None` for an embedding.
    `population_stats`: Conv4's BatchNorms hold statistics as buffers, to be used in eval
    mode (`model.batch_norm: population` at test time)."""
    name = cfg.name
    if name == "auto":
        name = "conv4" if len(input_shape) == 3 else "mlp"
    if name == "conv4":
        if len(input_shape) != 3:
            raise ConfigError(
                f"model.name: conv4 needs image inputs (C, H, W); the task gives {input_shape}"
            )
        if input_shape[1] != input_shape[2] or input_shape[1] < 16:
            raise ConfigError(
                f"model.name: conv4 needs square images of at least 16 x 16 (four 2x poolings); "
                f"the task gives {input_shape[1]} x {input_shape[2]}"
            )
        return Conv4(input_shape[0], input_shape[1], cfg.channels, out_features, cfg.downsample, population_stats,
                     cfg.batch_norm_init)
    if cfg.batch_norm == "population":
        raise ConfigError("model.batch_norm: population needs a model with BatchNorm (conv4); "
                          "the model is an MLP: set model.batch_norm=batch")
    if cfg.batch_norm_init != "ones":
        raise ConfigError(f"model.batch_norm_init: {cfg.batch_norm_init} needs a model with BatchNorm "
                          "(conv4); the model is an MLP: remove it")
    return MLP(math.prod(input_shape), cfg.hidden_sizes, out_features)
