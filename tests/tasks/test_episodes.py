"""EpisodeFamily over a tiny synthetic image set whose pixels say what each image is."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from distmeta.errors import ConfigError
from distmeta.tasks.episodes import EpisodeFamily

CLASSES = {"train": 3, "val": 6, "test": 5}
EXAMPLES = 4
OFFSET = {"train": 0, "val": 50, "test": 100}
# Where the top-left marker lands after 0, 1, 2, 3 counterclockwise quarter turns.
MARKER_AT = [(0, 0), (2, 0), (2, 2), (0, 2)]


def tiny_images(split: str) -> np.ndarray:
    """3x3 images: every pixel holds 1 + offset + class * EXAMPLES + example, except a
    255 marker in the top-left corner that shows how the image was turned."""
    values = 1 + OFFSET[split] + np.arange(CLASSES[split] * EXAMPLES)
    images = np.repeat(values, 9).reshape(CLASSES[split], EXAMPLES, 3, 3).astype(np.uint8)
    images[:, :, 0, 0] = 255
    return images


IMAGES = {split: tiny_images(split) for split in CLASSES}


@dataclass
class Tiny(EpisodeFamily):
    """Four quarter turns of each class in train, as Omniglot does."""

    def __post_init__(self):
        super().__post_init__()
        self.check_episode_fits(CLASSES, EXAMPLES, source="Tiny")

    def split_images(self, split: str) -> np.ndarray:
        return IMAGES[split]

    def rotations(self, split: str) -> int:
        return 4 if split == "train" else 1


def decode(image: np.ndarray, split: str) -> tuple[int, int, int]:
    """(class, example, quarter turns) of one (1, 3, 3) episode image."""
    pixels = np.rint(image[0] * 255).astype(int)
    turns = [t for t, (i, j) in enumerate(MARKER_AT) if pixels[i, j] == 255]
    assert len(turns) == 1 and (pixels == 255).sum() == 1
    return (*divmod(int(pixels[1, 1]) - 1 - OFFSET[split], EXAMPLES), turns[0])


def decoded(task: dict[str, np.ndarray], split: str, part: str) -> list[tuple[int, int, int, int]]:
    """(label, class, example, turns) of every image of the support or query set."""
    return [
        (int(y), *decode(x, split)) for x, y in zip(task[f"{part}_x"], task[f"{part}_y"])
    ]


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_episode_shapes_dtypes_and_labels(split):
    family = Tiny(n_way=5, k_shot=2, q_query=2)
    task = family.sample_task(np.random.default_rng(0), split)
    assert family.kind == "classification" and family.output_dim == 5
    assert family.input_shape == (1, 3, 3)
    assert task["support_x"].shape == (10, 1, 3, 3) and task["query_x"].shape == (10, 1, 3, 3)
    assert task["support_x"].dtype == task["query_x"].dtype == np.float32
    assert task["support_y"].dtype == task["query_y"].dtype == np.int64
    for part, per_class in (("support", 2), ("query", 2)):
        assert np.bincount(task[f"{part}_y"], minlength=5).tolist() == [per_class] * 5
        x = task[f"{part}_x"]
        assert x.min() >= 0 and x.max() == 1.0  # the 255 marker scales to exactly 1


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_each_label_is_one_drawn_class_with_distinct_examples(split):
    family = Tiny(n_way=5, k_shot=1, q_query=3)
    for seed in range(20):
        task = family.sample_task(np.random.default_rng(seed), split)
        classes, examples = family.sample_indices(np.random.default_rng(seed), split)
        images = decoded(task, split, "support") + decoded(task, split, "query")
        for label in range(5):
            mine = [(c, e, t) for y, c, e, t in images if y == label]
            # Labels follow the order the classes were drawn in.
            source, turns = divmod(int(classes[label]), family.rotations(split))
            assert {(c, t) for c, _, t in mine} == {(source, turns)}
            assert sorted(e for _, e, _ in mine) == sorted(examples[label])
            assert len({e for _, e, _ in mine}) == 4  # support and query never share one


def test_rotations_are_extra_classes_in_train_only():
    family = Tiny(n_way=5, k_shot=1, q_query=1)
    seen = {split: set() for split in CLASSES}
    for split in CLASSES:
        for seed in range(30):
            task = family.sample_task(np.random.default_rng(seed), split)
            seen[split] |= {(c, t) for _, c, _, t in decoded(task, split, "support")}
    assert seen["train"] == {(c, t) for c in range(3) for t in range(4)}
    assert seen["val"] == {(c, 0) for c in range(6)}
    assert seen["test"] == {(c, 0) for c in range(5)}


def test_same_seed_same_episode_other_seed_another():
    family = Tiny(n_way=4, k_shot=1, q_query=2)
    first, again, other = (
        family.sample_task(np.random.default_rng(seed), "train") for seed in (7, 7, 8)
    )
    assert all(np.array_equal(first[k], again[k]) for k in first)
    assert not all(np.array_equal(first[k], other[k]) for k in first)


def test_sample_stacks_a_task_batch():
    family = Tiny(n_way=3, k_shot=1, q_query=2)
    batch = family.sample([np.random.default_rng(i) for i in range(4)], "val")
    assert batch["support_x"].shape == (4, 3, 1, 3, 3) and batch["query_y"].shape == (4, 6)


@pytest.mark.parametrize("name", ["n_way", "k_shot", "q_query"])
def test_sizes_below_one_are_config_errors(name):
    with pytest.raises(ConfigError, match=rf"^task\.{name}: got 0; expected an integer >= 1$"):
        Tiny(**{name: 0})


def test_n_way_is_checked_against_the_smallest_split_with_rotations():
    Tiny(n_way=5, k_shot=1, q_query=1)  # train has 3 classes, 12 with rotations
    message = "task.n_way: got 6; the test split has 5 classes; expected at most 5"
    with pytest.raises(ConfigError, match=rf"^{message}$"):
        Tiny(n_way=6, k_shot=1, q_query=1)


def test_shots_are_checked_against_examples_per_class():
    Tiny(n_way=2, k_shot=1, q_query=3)
    message = (
        r"task.k_shot \+ task.q_query: got 2 \+ 3 = 5; Tiny has 4 examples per class; "
        "expected at most 4"
    )
    with pytest.raises(ConfigError, match=rf"^{message}$"):
        Tiny(n_way=2, k_shot=2, q_query=3)


def test_a_reshaped_family_draws_the_other_shape_and_leaves_the_first_as_it_was():
    family = Tiny(n_way=2, k_shot=1, q_query=1)
    other = family.reshaped(n_way=4, k_shot=1, q_query=3)
    assert other.episode_shape == {"n_way": 4, "k_shot": 1, "q_query": 3}
    assert family.episode_shape == {"n_way": 2, "k_shot": 1, "q_query": 1}
    task = other.sample_task(np.random.default_rng(0), "train")
    assert task["support_x"].shape == (4, 1, 3, 3) and task["query_x"].shape == (12, 1, 3, 3)
    # The same draw as a family built with that shape.
    built = Tiny(n_way=4, k_shot=1, q_query=3).sample_task(np.random.default_rng(0), "train")
    assert all(np.array_equal(task[k], built[k]) for k in task)


def test_the_configured_shape_takes_the_defaults_of_what_the_options_leave_out():
    assert Tiny.configured_shape({"n_way": 60, "q_query": 5, "data_dir": "/elsewhere"}) == {
        "n_way": 60, "k_shot": 1, "q_query": 5}
    assert Tiny.configured_shape({}) == {"n_way": 5, "k_shot": 1, "q_query": 15}  # EpisodeFamily's defaults
