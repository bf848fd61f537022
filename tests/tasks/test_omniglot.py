"""Omniglot on the real data: the split protocol, the PNG reader, episodes, bad input."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from distmeta.config import Config
from distmeta.errors import ConfigError, UserError
from distmeta.experiment import build_experiment
from distmeta.tasks.omniglot import Omniglot, read_omniglot_pngs
from distmeta.tasks.omniglot_splits import ALPHABETS, character_names, split_ids

SPLITS = ("train", "val", "test")


@pytest.fixture(scope="module")
def omniglot(omniglot_dir: Path) -> Omniglot:
    """Loaded once for the module, through the lazy path: sample_task before prepare()."""
    family = Omniglot(data_dir=str(omniglot_dir))
    family.sample_task(np.random.default_rng(0), "test")
    return family


@pytest.fixture(scope="module")
def paper(omniglot_dir: Path) -> np.ndarray:
    """All 1623 characters from the npz files, index = id - 1, True for paper."""
    sets = ("images_background", "images_evaluation")
    return np.concatenate([np.load(omniglot_dir / f"{name}.npz")["images"] for name in sets])


# sha256 of each of Snell et al.'s split files, lines sorted and joined by newlines
# (github.com/jakesnell/prototypical-networks c9bb4d2, data/omniglot/splits/vinyals/).
SNELL_SPLIT_SHA256 = {
    "train": "2c896cd81ce6e265cb77cf6b6639f5413bb98cf6396cfb69e79bf3ae783f2e26",
    "val": "aa90019d0f1878f34cd74856b44f307944e08b7408d636baebccd94ba852d517",
    "test": "871120bc00230686b507e366092d9f804988354e61d5405c4008e002223f2bcc",
    "trainval": "62d34cdcc485031005c531bd2a8f0dd8fcd177974311773eab1b29614501583c",
}


def test_vinyals_split_is_snells_split_files(omniglot):
    names = character_names()

    def digest(ids):
        lines = [f"{names[i - 1]}/rot{turn:03d}" for i in ids for turn in (0, 90, 180, 270)]
        return hashlib.sha256("\n".join(sorted(lines)).encode()).hexdigest()

    for split in SPLITS:
        assert digest(omniglot.character_ids(split)) == SNELL_SPLIT_SHA256[split], split
    trainval = Omniglot(data_dir=omniglot.data_dir, trainval=True)
    assert digest(trainval.character_ids("train")) == SNELL_SPLIT_SHA256["trainval"]
    assert np.array_equal(omniglot.character_ids("test"), np.arange(1201, 1624))


@pytest.mark.parametrize(("protocol", "characters", "classes"), [
    ("vinyals", [1028, 172, 423], [4112, 688, 1692]),
    ("maml", [1100, 100, 423], [1100, 100, 423]),
])
def test_each_protocols_splits_hold_every_character_once(omniglot, protocol, characters, classes):
    family = omniglot if protocol == "vinyals" else Omniglot(data_dir=omniglot.data_dir, split=protocol)
    ids = {split: family.character_ids(split) for split in SPLITS}
    assert [len(ids[s]) for s in SPLITS] == characters
    assert np.array_equal(np.sort(np.concatenate([ids[s] for s in SPLITS])), np.arange(1, 1624))
    assert [family.class_count(s, len(family.split_images(s))) for s in SPLITS] == classes
    for split in SPLITS:
        images = family.split_images(split)
        assert images.shape == (len(ids[split]), 20, 28, 28) and images.dtype == np.uint8


@pytest.mark.parametrize(("protocol", "train_classes"), [("vinyals", 4800), ("maml", 1200)])
def test_trainval_trains_on_train_and_val_and_holds_none_out(omniglot, protocol, train_classes):
    held_out = omniglot if protocol == "vinyals" else Omniglot(data_dir=omniglot.data_dir, split=protocol)
    family = Omniglot(data_dir=omniglot.data_dir, split=protocol, trainval=True, n_way=60)
    train = family.character_ids("train")
    assert sorted(train) == sorted([*held_out.character_ids("train"), *held_out.character_ids("val")])
    assert np.array_equal(family.character_ids("test"), held_out.character_ids("test"))
    if protocol == "vinyals":  # Snell's trainval.txt: Vinyals et al.'s 1200 training characters
        assert np.array_equal(train, np.arange(1, 1201))
    images = family.split_images("train")
    assert family.class_count("train", len(images)) == train_classes
    rows = {i: r for s in SPLITS for i, r in zip(held_out.character_ids(s), held_out.split_images(s))}
    assert all(np.array_equal(images[n], rows[i]) for n, i in enumerate(train))
    # Training episodes draw the val characters too.
    drawn = {int(train[c // family.rotations("train")]) for seed in range(5)
             for c in family.sample_indices(np.random.default_rng(seed), "train")[0]}
    assert drawn & set(held_out.character_ids("val").tolist())
    with pytest.raises(UserError, match=r"^the split sampled: got 'val'; task\.trainval trains on the val characters"):
        family.sample_task(np.random.default_rng(0), "val")


def test_maml_split_is_the_sorted_names_shuffled_with_seed_1():
    import random

    names = character_names()
    shuffled = sorted(names)
    random.seed(1)  # as Finn et al.'s data_generator.py
    random.shuffle(shuffled)
    ids = split_ids("maml")
    assert [names[i - 1] for i in ids["train"]] == shuffled[:1100]
    assert [names[i - 1] for i in ids["val"]] == shuffled[1100:1200]
    assert [names[i - 1] for i in ids["test"]] == shuffled[1200:]


def test_alphabet_table_matches_the_official_data(omniglot_dir):
    ranges = json.loads((omniglot_dir / "alphabet_id_ranges.json").read_text())
    first = 1
    for name, count in ALPHABETS:
        assert ranges[name] == [first, first + count - 1], name
        first += count
    assert first == 1624 and len(ranges) == len(ALPHABETS)
    names = character_names()
    for small in ("images_background_small1.zip", "images_background_small2.zip"):
        with zipfile.ZipFile(omniglot_dir / small) as archive:
            for entry in archive.namelist():
                match = re.search(r"([^/]+/character\d+)/(\d+)_\d+\.png$", entry)
                if match:
                    assert names[int(match[2]) - 1] == match[1], entry


def test_split_rows_are_the_characters_by_id_area_averaged(omniglot, paper):
    for split in SPLITS:
        ids = omniglot.character_ids(split)
        for row in (0, len(ids) - 1):
            ink = torch.from_numpy(~paper[ids[row] - 1]).float()[:, None]
            expected = F.interpolate(ink, size=(28, 28), mode="area")[:, 0] * 255
            got = omniglot.split_images(split)[row]
            assert np.array_equal(got, expected.round().to(torch.uint8).numpy())
            assert got.max() == 255 and (got == 0).mean() > 0.5  # ink on paper


def test_nearest_resize_is_what_the_papers_loaders_feed_their_models(omniglot_dir):
    """Snell et al.'s loader opens each PNG with PIL, turns it, then resizes it; Finn et
    al.'s script resizes with LANCZOS, which PIL replaces by nearest for 1-bit images."""
    family = Omniglot(data_dir=str(omniglot_dir), resize="nearest")
    ids = {split: list(family.character_ids(split)) for split in SPLITS}
    checked = 0
    with zipfile.ZipFile(omniglot_dir / "images_background_small1.zip") as archive:
        for entry in archive.namelist()[::37]:
            match = re.search(r"(\d+)_(\d+)\.png$", entry)
            if not match:
                continue
            char, drawer = int(match[1]), int(match[2])
            split = next(split for split in SPLITS if char in ids[split])
            ours = family.split_images(split)[ids[split].index(char), drawer - 1]
            png = Image.open(io.BytesIO(archive.read(entry)))
            assert png.mode == "1"
            for turns in range(4):
                snell = np.asarray(png.rotate(90 * turns).resize((28, 28)))
                finn = np.asarray(png.rotate(90 * turns).resize((28, 28), resample=Image.LANCZOS))
                assert np.array_equal(np.rot90(ours, turns), np.where(snell, 0, 255))
                assert np.array_equal(snell, finn)
            checked += 1
    assert checked >= 20
    assert set(np.unique(ours)) == {0, 255}  # ink or paper, no grey
    area = Omniglot(data_dir=str(omniglot_dir)).split_images(split)[ids[split].index(char), drawer - 1]
    assert not np.array_equal(ours, area)


def test_no_image_is_in_two_splits_even_rotated(omniglot):
    train = omniglot.split_images("train").reshape(-1, 28, 28)
    seen = {image.tobytes() for turns in range(4) for image in np.rot90(train, turns, (1, 2))}
    for split in ("val", "test"):
        images = {image.tobytes() for image in omniglot.split_images(split).reshape(-1, 28, 28)}
        assert not images & seen
        seen |= images


@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("n_way, k_shot, q_query", [(5, 1, 15), (20, 5, 15)])
def test_episode_layout(omniglot, split, n_way, k_shot, q_query):
    family = Omniglot(data_dir=omniglot.data_dir, n_way=n_way, k_shot=k_shot, q_query=q_query)
    task = family.sample_task(np.random.default_rng(1), split)
    assert family.input_shape == (1, 28, 28)
    assert task["support_x"].shape == (n_way * k_shot, 1, 28, 28)
    assert task["query_x"].shape == (n_way * q_query, 1, 28, 28)
    assert task["support_x"].dtype == task["query_x"].dtype == np.float32
    assert task["support_y"].dtype == task["query_y"].dtype == np.int64
    assert 0 <= task["query_x"].min() and task["query_x"].max() <= 1
    assert family.output_dim == n_way
    assert np.bincount(task["support_y"], minlength=n_way).tolist() == [k_shot] * n_way
    assert np.bincount(task["query_y"], minlength=n_way).tolist() == [q_query] * n_way


@pytest.mark.parametrize("protocol", ["vinyals", "maml"])
@pytest.mark.parametrize("split", SPLITS)
def test_episode_images_are_the_drawn_characters(omniglot, split, protocol):
    """Every split turns classes by all four quarter turns; `maml` never draws one character
    twice into an episode (its turns are drawn per class), `vinyals` may (its turns are
    classes of their own)."""
    family = omniglot if protocol == "vinyals" else Omniglot(data_dir=omniglot.data_dir, split=protocol)
    turns_seen = set()
    for seed in range(20):
        task = family.sample_task(np.random.default_rng(seed), split)
        classes, drawers = family.sample_indices(np.random.default_rng(seed), split)
        assert len(set(classes)) == 5 and all(len(set(row)) == 16 for row in drawers)
        characters, turns = np.divmod(classes, 4)
        if protocol == "maml":
            assert len(set(characters)) == 5
        for label, (character, turn, row) in enumerate(zip(characters, turns, drawers)):
            expected = np.rot90(family.split_images(split)[character, row], turn, (1, 2))
            support = task["support_x"][task["support_y"] == label, 0]
            query = task["query_x"][task["query_y"] == label, 0]
            assert np.array_equal(np.concatenate([support, query]), expected / np.float32(255))
            turns_seen.add(int(turn))
    assert turns_seen == {0, 1, 2, 3}


def test_support_and_query_images_of_a_class_differ(omniglot):
    # On the test split: train holds two pixel-identical drawings (Braille id 192, drawers
    # 3 and 19) that an episode may rightly split between support and query.
    for seed in range(10):
        task = omniglot.sample_task(np.random.default_rng(seed), "test")
        for label in range(5):
            support = task["support_x"][task["support_y"] == label]
            query = task["query_x"][task["query_y"] == label]
            assert not (support[:, None] == query[None]).all(axis=(2, 3, 4)).any()


def test_same_seed_same_episode_other_seed_another(omniglot):
    first, again, other = (
        omniglot.sample_task(np.random.default_rng(seed), "train") for seed in (3, 3, 4)
    )
    assert all(np.array_equal(first[k], again[k]) for k in first)
    assert not np.array_equal(first["support_x"], other["support_x"])


def test_pickled_family_carries_its_data(omniglot, tmp_path):
    copy = pickle.loads(pickle.dumps(omniglot))
    copy.data_dir = str(tmp_path / "gone")  # a worker without the files
    rng = np.random.default_rng(5), np.random.default_rng(5)
    task, shipped = omniglot.sample_task(rng[0], "val"), copy.sample_task(rng[1], "val")
    assert all(np.array_equal(task[k], shipped[k]) for k in task)


def test_png_reader_matches_npz_on_zip_and_folder(omniglot_dir, paper, tmp_path):
    source = omniglot_dir / "images_background_small1.zip"
    with zipfile.ZipFile(source) as archive:
        archive.extractall(tmp_path)
    folder = tmp_path / "images_background_small1"
    # Balinese has the lowest ids; renamed to sort last, it shows order comes from ids.
    (folder / "Balinese").rename(folder / "Zz_Balinese")
    ranges = json.loads((omniglot_dir / "alphabet_id_ranges.json").read_text())
    alphabets = ["Balinese", "Early_Aramaic", "Greek", "Korean", "Latin"]
    expected_ids = np.concatenate([np.arange(ranges[a][0], ranges[a][1] + 1) for a in alphabets])
    for root in (source, folder):
        ids, images = read_omniglot_pngs(root)
        assert np.array_equal(ids, expected_ids)
        assert images.dtype == bool and np.array_equal(images, paper[ids - 1])


def test_png_folders_in_data_dir_are_read_and_checked(omniglot_dir, paper, tmp_path):
    for name, ids in (("images_background", [1, 2]), ("images_evaluation", [965])):
        for char in ids:
            drawing = tmp_path / name / "Script" / f"character{char:02d}"
            drawing.mkdir(parents=True)
            for drawer in range(1, 21):
                image = Image.fromarray(paper[char - 1, drawer - 1])
                image.save(drawing / f"{char:04d}_{drawer:02d}.png")
    family = Omniglot(data_dir=str(tmp_path))
    with pytest.raises(UserError, match="images_background: found 2 characters x 20 drawers, "
                       r"962 of ids 1\.\.964 missing"):
        family.prepare()


def test_zip_layout_is_accepted_and_a_broken_zip_is_a_user_error(tmp_path):
    for name in ("images_background.zip", "images_evaluation.zip"):
        (tmp_path / name).write_bytes(b"not a zip")
    family = Omniglot(data_dir=str(tmp_path))
    with pytest.raises(UserError, match="images_background.zip: cannot read"):
        family.prepare()


def test_data_dir_defaults_to_distmeta_omniglot(omniglot_dir, monkeypatch, tmp_path):
    from distmeta.loading import load_config

    monkeypatch.setenv("DISTMETA_OMNIGLOT", str(omniglot_dir))
    assert Omniglot().data_dir == str(omniglot_dir)
    assert build_experiment(load_config("omniglot-protonet")).family.data_dir == str(omniglot_dir)
    monkeypatch.delenv("DISTMETA_OMNIGLOT")
    monkeypatch.chdir(tmp_path)  # no data/omniglot here
    with pytest.raises(ConfigError, match=r"^task\.data_dir: 'data/omniglot' is not a folder.*set task.data_dir or "
                       r"DISTMETA_OMNIGLOT; the zips: github.com/brendenlake/omniglot"):
        build_experiment(load_config("omniglot-maml"))


def test_missing_data_dir(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(ConfigError, match=r"^task\.data_dir: .*nowhere' is not a folder") as err:
        Omniglot(data_dir=str(missing))
    assert "images_background.npz + images_evaluation.npz" in str(err.value)


@pytest.mark.parametrize("files", [[], ["images_background.npz"], ["images_background.zip"]])
def test_data_dir_without_a_complete_layout(tmp_path, files):
    for name in files:
        (tmp_path / name).touch()
    with pytest.raises(ConfigError, match=r"^task\.data_dir: .* holds none of images_background"):
        Omniglot(data_dir=str(tmp_path))


@pytest.mark.parametrize(
    "options, message",
    [
        (
            {"n_way": 689},
            "task.n_way: got 689; the val split has 688 classes; expected at most 688",
        ),
        ({"n_way": 0}, "task.n_way: got 0; expected an integer >= 1"),
        ({"k_shot": 0}, "task.k_shot: got 0; expected an integer >= 1"),
        ({"q_query": -1}, "task.q_query: got -1; expected an integer >= 1"),
        (
            {"k_shot": 1, "q_query": 20},
            ("task.k_shot + task.q_query: got 1 + 20 = 21; Omniglot has 20 drawers per "
             "character; expected at most 20"),
        ),
        ({"image_size": 106}, "task.image_size: got 106; expected 1 to 105"),
    ],
)
def test_bad_options_are_config_errors(omniglot_dir, options, message):
    with pytest.raises(ConfigError) as err:
        Omniglot(data_dir=str(omniglot_dir), **options)
    assert str(err.value).startswith(message)


def test_config_validates_omniglot_before_loading(omniglot_dir):
    task = {"family": "omniglot", "data_dir": str(omniglot_dir), "n_way": 20, "k_shot": 5}
    config = Config.from_dict({"task": task})
    assert build_experiment(config).family.output_dim == 20
    with pytest.raises(ConfigError, match=r"^task\.k_shot \+ task\.q_query: got 6 \+ 15"):
        build_experiment(Config.from_dict({"task": {**task, "k_shot": 6}}))


def test_damaged_npz_files_are_one_line_errors(tmp_path):
    from distmeta.errors import UserError

    for name in ("images_background.npz", "images_evaluation.npz"):
        np.savez(tmp_path / name, images=np.zeros((3, 20, 105, 105), dtype=np.uint8))
    family = Omniglot(data_dir=str(tmp_path))
    with pytest.raises(UserError, match=r"images_background.npz: 'images' is uint8 \(3, 20, 105, 105\); expected bool"):
        family.prepare()
    (tmp_path / "images_background.npz").write_bytes(b"garbage")
    with pytest.raises(UserError, match=r"images_background.npz: cannot read the 'images' array"):
        Omniglot(data_dir=str(tmp_path)).prepare()
    (tmp_path / "images_background.npz").write_bytes(b"")
    with pytest.raises(UserError, match=r"images_background.npz: cannot read the 'images' array"):
        Omniglot(data_dir=str(tmp_path)).prepare()
    # A header claiming 189 PiB: refused from the header, nothing allocated.
    header = b"{'descr': '|b1', 'fortran_order': False, 'shape': (964000000000, 20, 105, 105), }"
    header += b" " * (117 - len(header)) + b"\n"
    with zipfile.ZipFile(tmp_path / "images_background.npz", "w") as archive:
        archive.writestr("images.npy", b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header)
    with pytest.raises(UserError, match=r"images_background.npz: 'images' is bool \(964000000000, 20, 105, 105\); "
                                        r"expected bool \(964, 20, 105, 105\)"):
        Omniglot(data_dir=str(tmp_path)).prepare()


def test_resized_images_are_cached_and_rebuilt_when_the_data_changes(omniglot_dir, tmp_path, monkeypatch):
    """A second process reads the resized array from the cache instead of decoding; a
    changed source file, a damaged cache file or an unwritable cache folder each cost only
    the decoding."""
    import shutil

    from distmeta.tasks import omniglot as module

    data, cache = tmp_path / "data", tmp_path / "cache"
    data.mkdir()
    for name in ("images_background.npz", "images_evaluation.npz"):
        shutil.copy(omniglot_dir / name, data / name)
    monkeypatch.setenv("DISTMETA_CACHE_DIR", str(cache))
    decoded = Omniglot(data_dir=str(data))
    decoded.prepare()
    (cached_file,) = cache.iterdir()

    def no_decoding(*args):
        raise AssertionError("decoded although the cache holds these images")

    with monkeypatch.context() as patch:
        patch.setattr(module, "_read_part", no_decoding)
        hit = Omniglot(data_dir=str(data))
        hit.prepare()
        for split in SPLITS:
            assert np.array_equal(hit.split_images(split), decoded.split_images(split))
        os.utime(data / "images_evaluation.npz", ns=(1, 1))  # the data changed: another key
        with pytest.raises(AssertionError, match="decoded although"):
            Omniglot(data_dir=str(data)).prepare()
    assert list(cache.iterdir()) == [cached_file]  # a failed build writes nothing

    changed = Omniglot(data_dir=str(data))
    changed.prepare()  # decodes the changed data and caches it under its own key
    (fresh_file,) = set(cache.iterdir()) - {cached_file}
    fresh_file.write_bytes(b"damaged")
    rebuilt = Omniglot(data_dir=str(data))
    rebuilt.prepare()
    assert np.array_equal(rebuilt.split_images("test"), decoded.split_images("test"))
    assert np.array_equal(np.load(fresh_file), np.load(cached_file))  # rewritten whole

    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    monkeypatch.setenv("DISTMETA_CACHE_DIR", str(blocked / "cache"))
    unwritable = Omniglot(data_dir=str(data))
    unwritable.prepare()
    assert np.array_equal(unwritable.split_images("val"), decoded.split_images("val"))
    monkeypatch.setenv("DISTMETA_CACHE_DIR", "")
    assert module.cache_file([data / "images_background.npz"], 28, "area") is None
    monkeypatch.setenv("DISTMETA_CACHE_DIR", str(cache))
    sources = [data / "images_background.npz", data / "images_evaluation.npz"]
    assert module.cache_file(sources, 28, "area") != module.cache_file(sources, 28, "nearest")
