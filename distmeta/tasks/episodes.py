"""N-way K-shot classification episodes over any class-indexed image set.

A subclass hands over each split's images as one uint8 array (classes, examples, H, W) and
says how rotations enter: as classes of their own, or as a random turn of each class drawn;
this module draws the episodes.
"""

from __future__ import annotations

import copy
from abc import abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from distmeta.errors import ConfigError
from distmeta.tasks.base import TaskFamily

EPISODE_SHAPE = ("n_way", "k_shot", "q_query")


@dataclass
class EpisodeFamily(TaskFamily):
    """N-way K-shot Q-query episodes: N classes of a split, K support and Q query images each.

    The N classes are drawn without replacement from the split's classes (rotations
    included, see `rotations` and `random_turns`) and labelled 0..N-1 in the order drawn;
    each class gets K + Q
    distinct examples, the first K for support. Images come back as float32 in [0, 1] shaped
    (N*K, 1, H, W) and (N*Q, 1, H, W), labels as int64, grouped by class.

    Subclasses implement `split_images` (and `input_shape` when knowing it means loading
    data) and check their sizes with `check_episode_fits` once they know them.
    """

    kind = "classification"

    n_way: int = 5
    """Classes per episode (N of N-way)."""
    k_shot: int = 1
    """Support examples per class (K of K-shot)."""
    q_query: int = 15
    """Query examples per class."""

    def __post_init__(self):
        for name in ("n_way", "k_shot", "q_query"):
            value = getattr(self, name)
            if value < 1:
                raise ConfigError(f"task.{name}: got {value}; expected an integer >= 1")

    @abstractmethod
    def split_images(self, split: str) -> np.ndarray:
        """The images of `split`: uint8 (classes, examples, H, W), 0 background, 255 ink."""

    def rotations(self, split: str) -> int:
        """How many quarter turns of each class are classes of `split`: 1 for the class
        alone, 4 for the class and its 90, 180 and 270 degree rotations (square images)."""
        return 1

    def random_turns(self, split: str) -> bool:
        """True: the `rotations(split)` turns are not classes of their own; each class drawn
        into an episode is turned by one of them at random (Finn et al.'s Omniglot)."""
        return False

    def class_count(self, split: str, images: int) -> int:
        """How many classes `split` offers an episode when it holds `images` classes."""
        return images if self.random_turns(split) else images * self.rotations(split)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (1, *self.split_images("train").shape[2:])

    @property
    def output_dim(self) -> int:
        return self.n_way

    @property
    def episode_shape(self) -> dict[str, int]:
        """`n_way`, `k_shot` and `q_query`."""
        return {name: getattr(self, name) for name in EPISODE_SHAPE}

    @classmethod
    def configured_shape(cls, options: Mapping[str, Any]) -> dict[str, int]:
        """The `episode_shape` a family built from the `task:` `options` draws (the
        defaults where they set none), without building it: a run's data_dir may not exist
        on the machine that reads its config."""
        defaults = {f.name: f.default for f in fields(cls) if f.name in EPISODE_SHAPE}
        return {name: int(options.get(name, defaults[name])) for name in EPISODE_SHAPE}

    def reshaped(self, n_way: int, k_shot: int, q_query: int) -> EpisodeFamily:
        """This family drawing episodes of another shape, its loaded images shared (a
        shallow copy: `__post_init__` would drop them). For a shape this data has served
        before, as a run's training shape: it is not checked against the splits again."""
        family = copy.copy(self)
        family.n_way, family.k_shot, family.q_query = n_way, k_shot, q_query
        return family

    def check_episode_fits(
        self,
        classes: Mapping[str, int],
        examples_per_class: int,
        source: str = "the data",
        examples: str = "examples per class",
    ) -> None:
        """Raise ConfigError unless every split has n_way classes and every class has
        k_shot + q_query examples. `classes` counts each split's classes before rotation;
        `source` and `examples` word the message: "{source} has 20 {examples}"."""
        split, available = min(
            ((s, self.class_count(s, n)) for s, n in classes.items()), key=lambda item: item[1]
        )
        if self.n_way > available:
            raise ConfigError(
                f"task.n_way: got {self.n_way}; the {split} split has {available} classes; "
                f"expected at most {available}"
            )
        needed = self.k_shot + self.q_query
        if needed > examples_per_class:
            raise ConfigError(
                f"task.k_shot + task.q_query: got {self.k_shot} + {self.q_query} = {needed}; "
                f"{source} has {examples_per_class} {examples}; "
                f"expected at most {examples_per_class}"
            )

    def sample_indices(self, rng: np.random.Generator, split: str) -> tuple[np.ndarray, np.ndarray]:
        """The draw behind `sample_task`: classes (N,) and examples (N, K+Q) of each.

        Class c stands for `split_images(split)[c // R]` turned c % R quarter turns, where
        R = `rotations(split)`; row i of examples indexes that class's examples.
        """
        num_classes, num_examples = self.split_images(split).shape[:2]
        classes = rng.choice(self.class_count(split, num_classes), self.n_way, replace=False)
        if self.random_turns(split):
            classes = classes * self.rotations(split) + rng.integers(self.rotations(split), size=self.n_way)
        # Sorting random keys draws a without-replacement subset for all classes at once.
        examples = rng.random((self.n_way, num_examples)).argsort(axis=1)
        return classes, examples[:, : self.k_shot + self.q_query]

    def sample_task(self, rng: np.random.Generator, split: str) -> dict[str, np.ndarray]:
        classes, examples = self.sample_indices(rng, split)
        source, turns = np.divmod(classes, self.rotations(split))
        images = self.split_images(split)[source[:, None], examples]
        for turn in np.unique(turns[turns > 0]):
            images[turns == turn] = np.rot90(images[turns == turn], turn, axes=(2, 3))
        images = np.divide(images, 255, dtype=np.float32)[:, :, None]

        n, k, q = self.n_way, self.k_shot, self.q_query
        labels = np.arange(n, dtype=np.int64)
        return {
            "support_x": images[:, :k].reshape(n * k, *images.shape[2:]),
            "support_y": np.repeat(labels, k),
            "query_x": images[:, k:].reshape(n * q, *images.shape[2:]),
            "query_y": np.repeat(labels, q),
        }
