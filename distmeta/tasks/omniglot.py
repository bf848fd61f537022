"""Omniglot few-shot classification (Lake et al. 2015) on the field's splits
(`omniglot_splits.py`)."""

from __future__ import annotations

import hashlib
import io
import os
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from distmeta.errors import ConfigError, UserError
from distmeta.fileio import atomic_write
from distmeta.tasks.episodes import EpisodeFamily
from distmeta.tasks.omniglot_splits import split_ids
from distmeta_envs.cache import cache_folder

SIDE = 105
"""Height and width of an original Omniglot image."""
DRAWERS = 20
"""Drawings of each character, one per person (drawer)."""
PARTS = {"images_background": 964, "images_evaluation": 659}
"""The two official sets in character-id order: background ids 1..964, evaluation 965..1623."""
LAYOUTS = (".npz", ".zip", "")
"""Accepted forms of each set in data_dir, tried in this order, by name suffix ("": folder)."""

_PNG_NAME = re.compile(r"(?:^|/)character\d+/(\d+)_(\d+)\.png$")
_RESIZE_CHUNK = 2048  # images per resize step: ~90 MB of float32 at 105x105


@dataclass
class Omniglot(EpisodeFamily):
    """N-way K-shot episodes of handwritten characters: 1623 characters x 20 drawers.

    Characters are split into meta-train, meta-val and meta-test by `split`, a protocol of
    the papers (see `omniglot_splits.py`). Images are shrunk from 105x105 to
    `image_size` by `resize`.
    """

    data_dir: str = field(default_factory=lambda: os.environ.get("DISTMETA_OMNIGLOT", "data/omniglot"))
    """Folder holding images_background.npz + images_evaluation.npz, or the official
    images_background.zip + images_evaluation.zip (github.com/brendenlake/omniglot,
    `python/`), or those zips extracted. Unset: $DISTMETA_OMNIGLOT, else data/omniglot."""
    image_size: int = 28
    """Side of the square images fed to the model (1 to 105)."""
    resize: Literal["area", "nearest"] = "area"
    """How images are shrunk to `image_size`. `area`: each pixel the ink fraction of its
    area, in grey levels. `nearest`: the original pixel nearest each pixel's centre, ink or
    paper, pixel for pixel what Snell et al.'s and Finn et al.'s loaders feed their models:
    both resize the 1-bit PNGs with PIL, which resizes 1-bit images by nearest neighbour
    whatever filter is asked (Finn's asks for LANCZOS). `area` is the default because it
    trained better in the one A/B run (BENCHMARKS.md, "ProtoNets: the images' resizing")."""
    split: Literal["vinyals", "maml"] = "vinyals"
    """`vinyals`: Vinyals et al.'s 1200 training / 423 test characters with Snell et al.'s
    172 val characters carved from the training ones, every rotation a class of its own
    (4112 / 688 / 1692 classes). `maml`: Finn et al.'s characters shuffled with seed 1 into
    1100 / 100 / 423, each drawn class turned at random."""
    trainval: bool = False
    """Train on the `train` and `val` characters together and hold none out for
    validation, as Snell et al.'s published models (`run_trainval.py`): 4800 training
    classes under `vinyals`. Validation and `--split val` are then refused."""

    def __post_init__(self):
        super().__post_init__()
        if not 1 <= self.image_size <= SIDE:
            raise ConfigError(
                f"task.image_size: got {self.image_size}; expected 1 to {SIDE} "
                f"(Omniglot images are {SIDE}x{SIDE})"
            )
        self._ids = split_ids(self.split, self.trainval)
        self.check_episode_fits(
            {split: len(ids) for split, ids in self._ids.items()},
            DRAWERS,
            source="Omniglot",
            examples="drawers per character",
        )
        self._suffix()  # fail on a bad data_dir now, before Ray starts
        self._splits: dict[str, np.ndarray] | None = None

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (1, self.image_size, self.image_size)

    def rotations(self, split: str) -> int:
        return 4

    def random_turns(self, split: str) -> bool:
        return self.split == "maml"

    def character_ids(self, split: str) -> np.ndarray:
        """Official ids of the characters of `split`, in class order."""
        return self._ids[split]

    def check_split(self, split: str, flag: str) -> None:
        if split == "val" and self.trainval:
            raise UserError(f"{flag}: got 'val'; task.trainval trains on the val characters, so none "
                            "are held out; expected train or test (a run to validate on val trains with task.trainval: false)")
        super().check_split(split, flag)

    def split_images(self, split: str) -> np.ndarray:
        self.check_split(split, "the split sampled")
        if self._splits is None:
            self.prepare()
        return self._splits[split]  # type: ignore[index]  # set by prepare()

    def prepare(self) -> None:
        """Read all 1623 characters into memory, resized (about 25 MB at 28x28). The resized
        array is cached (see `cache_file`): decoding the 105x105 originals takes seconds,
        and every process that trains or evaluates (each Tune trial) would pay them."""
        if self._splits is not None:
            return
        suffix = self._suffix()
        sources = [Path(self.data_dir).expanduser() / (name + suffix) for name in PARTS]
        cache = cache_file(sources, self.image_size, self.resize)
        expected = (sum(PARTS.values()), DRAWERS, self.image_size, self.image_size)
        if cache is not None and cache.is_file():
            try:
                images = np.load(cache)
                if images.shape == expected and images.dtype == np.uint8:
                    self._keep(images)
                    return
            except (OSError, ValueError):
                pass  # a damaged cache file is rebuilt below
        first, parts = 1, []
        for path, count in zip(sources, PARTS.values()):
            parts.append(_resize(_read_part(path, first, count), self.image_size, self.resize))
            first += count
        images = np.concatenate(parts)
        self._keep(images)
        if cache is not None:
            try:
                atomic_write(cache, lambda f: np.save(f, images))
            except OSError:
                pass  # an unwritable cache costs the next process the decoding, nothing else

    def _keep(self, images: np.ndarray) -> None:
        """Each split's rows of all characters' images (index = id - 1), kept apart so that
        an episode indexes its split directly; together they hold each character once."""
        self._splits = {split: images[ids - 1] for split, ids in self._ids.items()}

    def _suffix(self) -> str:
        """The name suffix of the layout found in data_dir."""
        root = Path(self.data_dir).expanduser()
        for suffix in LAYOUTS:
            paths = [root / (name + suffix) for name in PARTS]
            if all(p.is_file() if suffix else p.is_dir() for p in paths):
                return suffix
        expected = (
            "images_background.npz + images_evaluation.npz, or images_background.zip + "
            "images_evaluation.zip, or the folders images_background/ + images_evaluation/"
        )
        problem = "holds none of" if root.is_dir() else "is not a folder; expected one holding"
        raise ConfigError(f"task.data_dir: '{root}' {problem} {expected} (set task.data_dir or "
                          "DISTMETA_OMNIGLOT; the zips: github.com/brendenlake/omniglot, python/)")


def cache_file(sources: list[Path], image_size: int, resize: str) -> Path | None:
    """Where the resized images of these source files are cached: a file named by the
    sources' paths, sizes and modification times and the image size and resize, in distmeta's cache
    folder (`distmeta_envs.cache.cache_folder`). None for extracted folders, which are not
    cached, or when caching is off."""
    folder = cache_folder()
    if folder is None or not all(p.is_file() for p in sources):
        return None
    key = hashlib.sha1()
    for path in sources:
        stat = path.stat()
        key.update(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|".encode())
    return folder / f"omniglot-{image_size}-{resize}-{key.hexdigest()[:16]}.npy"


def read_omniglot_pngs(root: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Every character under `root`, a folder or a .zip of the official PNG layout
    `<Alphabet>/characterNN/<id>_<drawer>.png` (at any depth).

    Returns the character ids, ascending, and their images: bool (characters, drawers,
    105, 105) with drawers in ascending order, True for paper as in the PNGs.
    """
    root = Path(root)
    if root.is_dir():
        names = [p.relative_to(root).as_posix() for p in root.rglob("*.png")]
        return _decode_pngs(root, names, lambda name: (root / name).read_bytes())
    try:
        archive = zipfile.ZipFile(root)
    except (OSError, zipfile.BadZipFile) as exc:
        raise UserError(f"{root}: cannot read it as a folder or zip of PNGs: {exc}") from None
    with archive:
        return _decode_pngs(root, archive.namelist(), archive.read)


def _decode_pngs(root: Path, names: list[str], read) -> tuple[np.ndarray, np.ndarray]:
    found = {}
    for name in names:
        match = _PNG_NAME.search(name)
        if match:
            found[int(match[1]), int(match[2])] = name
    if not found:
        raise UserError(f"{root}: no Omniglot PNGs <Alphabet>/characterNN/<id>_<drawer>.png")
    # Alphabet folders sort differently from character ids, so order by the file names.
    ids = np.unique([key[0] for key in found])
    drawers = np.unique([key[1] for key in found])
    if len(found) != len(ids) * len(drawers):
        raise UserError(
            f"{root}: characters have different sets of drawers; expected every character "
            f"drawn by the same {len(drawers)} drawers"
        )
    images = np.empty((len(ids), len(drawers), SIDE, SIDE), dtype=bool)
    for (char, drawer), name in found.items():
        try:
            image = np.asarray(Image.open(io.BytesIO(read(name))).convert("L")) >= 128
        except (OSError, ValueError) as exc:  # PIL's UnidentifiedImageError is an OSError
            raise UserError(f"{root}/{name}: not a readable PNG: {exc}") from None
        if image.shape != (SIDE, SIDE):
            raise UserError(f"{root}/{name}: image is {image.shape}; expected ({SIDE}, {SIDE})")
        images[np.searchsorted(ids, char), np.searchsorted(drawers, drawer)] = image
    return ids, images


def _read_part(path: Path, first_id: int, count: int) -> np.ndarray:
    """Paper masks (count, 20, 105, 105) of characters first_id.. from an npz, zip or folder."""
    if path.suffix == ".npz":
        expected_shape = (count, DRAWERS, SIDE, SIDE)
        try:
            # The header first: a damaged one must not make numpy allocate what it claims.
            with zipfile.ZipFile(path) as archive, archive.open("images.npy") as member:
                version = np.lib.format.read_magic(member)
                read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)
                shape, _, dtype = read_header(member)
            if shape == expected_shape and dtype == bool:
                with np.load(path) as loaded:
                    return loaded["images"]
        except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile) as exc:  # EOFError: an empty file
            raise UserError(f"{path}: cannot read the 'images' array: {type(exc).__name__}: {str(exc)[:200]}") from None
        raise UserError(f"{path}: 'images' is {dtype} {shape}; expected bool {expected_shape}, True = paper")
    ids, images = read_omniglot_pngs(path)
    expected = np.arange(first_id, first_id + count)
    if not np.array_equal(ids, expected) or images.shape[1] != DRAWERS:
        missing = np.setdiff1d(expected, ids)
        raise UserError(
            f"{path}: found {len(ids)} characters x {images.shape[1]} drawers, "
            f"{len(missing)} of ids {first_id}..{expected[-1]} missing; "
            f"expected all {count} characters x {DRAWERS} drawers"
        )
    return images


def _resize(paper: np.ndarray, size: int, method: str) -> np.ndarray:
    """Ink as uint8 (…, size, size), 0 paper to 255 ink, from paper masks, shrunk by
    `method` (`Omniglot.resize`)."""
    if method == "nearest":
        # PIL's nearest neighbour: output pixel i samples the original pixel under its centre.
        nearest = ((np.arange(size) + 0.5) * SIDE / size).astype(np.intp)
        return np.where(paper[..., nearest[:, None], nearest], 0, 255).astype(np.uint8)
    flat = torch.from_numpy(paper.reshape(-1, 1, SIDE, SIDE))
    out = torch.empty((len(flat), 1, size, size), dtype=torch.uint8)
    for start in range(0, len(flat), _RESIZE_CHUNK):
        ink = (~flat[start : start + _RESIZE_CHUNK]).float()
        out[start : start + _RESIZE_CHUNK] = (
            F.interpolate(ink, size=(size, size), mode="area").mul(255).round().to(torch.uint8)
        )
    return out.numpy().reshape(*paper.shape[:-2], size, size)
