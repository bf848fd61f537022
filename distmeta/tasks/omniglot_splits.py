"""Omniglot's meta-train / meta-val / meta-test character splits, as the papers' code
defines them (`task.split`).

Characters are named `<Alphabet>/characterNN` as in the official zips, and numbered by
the official id: the 964 background characters (30 alphabets), then the 659 evaluation
ones (20 alphabets), each alphabet's characters in order.

- `vinyals` (Vinyals et al. 2016; the split files of Snell et al. 2017,
  github.com/jakesnell/prototypical-networks `data/omniglot/splits/vinyals/`): characters
  1-1200 for training (1028 for `train` and, as Snell's `val.txt`, the 172 characters of
  five alphabets for `val`) and the remaining 423 for `test`. Every split counts each
  character's 0, 90, 180 and 270 degree rotations as classes of their own: 4112 / 688 /
  1692 classes. Snell's published models train on `train` + `val` (his `trainval.txt`,
  `scripts/train/few_shot/run_trainval.py`): `trainval=True`, 4800 training classes.
- `maml` (Finn et al. 2017, github.com/cbfinn/maml `data_generator.py`): all 1623
  characters shuffled with Python's `random.seed(1)`, then 1100 for `train`, 100 for
  `val`, the last 423 for `test`. Classes are characters; in every split each class drawn
  into an episode is turned a random number of quarter turns. Finn's code shuffles the
  order `os.listdir` happens to return, which no file system fixes; distmeta shuffles the
  names sorted, so the characters of each split are not Finn's own, but the protocol
  (sizes, seed, rotations) is.
"""

from __future__ import annotations

import random

import numpy as np

ALPHABETS = (
    ("Arcadian", 26), ("Armenian", 41), ("Asomtavruli_(Georgian)", 40), ("Balinese", 24),
    ("Bengali", 46), ("Blackfoot_(Canadian_Aboriginal_Syllabics)", 14), ("Braille", 26),
    ("Cyrillic", 33), ("Early_Aramaic", 22), ("Syriac_(Estrangelo)", 23),
    ("Anglo-Saxon_Futhorc", 29), ("Futurama", 26), ("Grantha", 43), ("Greek", 24),
    ("Gujarati", 48), ("Hebrew", 22), ("Japanese_(hiragana)", 52),
    ("Inuktitut_(Canadian_Aboriginal_Syllabics)", 16), ("Malay_(Jawi_-_Arabic)", 40),
    ("Japanese_(katakana)", 47), ("Korean", 40), ("Latin", 26), ("Alphabet_of_the_Magi", 20),
    ("Mkhedruli_(Georgian)", 41), ("Burmese_(Myanmar)", 34), ("N_Ko", 33),
    ("Ojibwe_(Canadian_Aboriginal_Syllabics)", 14), ("Sanskrit", 42), ("Tagalog", 17),
    ("Tifinagh", 55), ("Angelic", 20), ("Atemayar_Qelisayer", 26), ("Atlantean", 26),
    ("Aurek-Besh", 26), ("Avesta", 26), ("Ge_ez", 26), ("Glagolitic", 45), ("Gurmukhi", 45),
    ("Kannada", 41), ("Keble", 26), ("Malayalam", 47), ("Manipuri", 40), ("Mongolian", 30),
    ("Old_Church_Slavonic_(Cyrillic)", 45), ("Oriya", 46), ("Syriac_(Serto)", 23),
    ("Sylheti", 28), ("Tengwar", 25), ("Tibetan", 42), ("ULOG", 26),
)
"""The 50 alphabets in official id order and how many characters each has."""

VINYALS_VAL_ALPHABETS = ("Armenian", "Bengali", "Early_Aramaic", "Hebrew", "Mkhedruli_(Georgian)")
"""The alphabets of Snell et al.'s `val.txt` (172 characters, all among ids 1-1200)."""

VINYALS_TRAINVAL = 1200
"""Characters 1-1200 are Vinyals et al.'s training characters; 1201-1623 are for test."""

MAML_SEED, MAML_TRAIN, MAML_VAL = 1, 1100, 100
"""Finn et al.'s shuffle seed and how many shuffled characters go to train and val."""

PROTOCOLS = ("vinyals", "maml")


def character_names() -> list[str]:
    """`<Alphabet>/characterNN` of ids 1..1623, in id order."""
    return [f"{name}/character{n:02d}" for name, count in ALPHABETS for n in range(1, count + 1)]


def split_ids(protocol: str, trainval: bool = False) -> dict[str, np.ndarray]:
    """The official ids of the characters of `train`, `val` and `test` under `protocol`,
    each in ascending id order (vinyals) or in the shuffled order (maml). `trainval`: the
    `val` characters join `train` (1200 characters under either protocol) and there is no
    `val` split."""
    if trainval:
        held_out = split_ids(protocol)
        train = np.concatenate([held_out["train"], held_out["val"]])  # maml: the first 1200 shuffled
        return {"train": np.sort(train) if protocol == "vinyals" else train, "test": held_out["test"]}
    names = character_names()
    ids = np.arange(1, len(names) + 1)
    if protocol == "vinyals":
        alphabet = np.array([name.split("/")[0] for name in names])
        val = np.isin(alphabet, VINYALS_VAL_ALPHABETS)
        training = ids <= VINYALS_TRAINVAL
        return {"train": ids[training & ~val], "val": ids[val], "test": ids[~training]}
    if protocol == "maml":
        order = sorted(range(len(names)), key=names.__getitem__)
        random.Random(MAML_SEED).shuffle(order)
        shuffled = ids[order]
        return {"train": shuffled[:MAML_TRAIN], "val": shuffled[MAML_TRAIN:MAML_TRAIN + MAML_VAL],
                "test": shuffled[MAML_TRAIN + MAML_VAL:]}
    raise ValueError(f"unknown Omniglot protocol {protocol!r}; expected one of {PROTOCOLS}")
