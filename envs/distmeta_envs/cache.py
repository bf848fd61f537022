"""Where what is slow to build and never changes is kept between processes: the folder
`$DISTMETA_CACHE_DIR` (empty: keep nothing), else `$XDG_CACHE_HOME/distmeta`, else
`~/.cache/distmeta` (distmeta's Omniglot images are kept there too). Files are written
whole or not at all; a missing or damaged file is built again."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def cache_folder() -> Path | None:
    """The cache folder, or None when `DISTMETA_CACHE_DIR` is set empty."""
    folder = os.environ.get("DISTMETA_CACHE_DIR")
    if folder is None:
        return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "distmeta"
    return Path(folder) if folder else None


def read_cached(name: str) -> bytes | None:
    """The cached file `name`, or None (not cached, no cache, unreadable)."""
    folder = cache_folder()
    try:
        return (folder / name).read_bytes() if folder is not None else None
    except OSError:
        return None


def write_cached(name: str, data: bytes) -> None:
    """Keep `data` as `name`; an unwritable cache costs the next process a rebuild, nothing else."""
    folder = cache_folder()
    if folder is None:
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, folder / name)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError:
        pass
