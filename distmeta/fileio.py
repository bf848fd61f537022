"""Files written whole or not at all."""

from __future__ import annotations

import fcntl
import functools
import os
import socket
import tempfile
from pathlib import Path
from typing import BinaryIO

from distmeta.errors import UserError


@functools.cache
def _umask() -> int:
    """This process's umask; read from /proc where it can be, since setting it to read it
    (the portable way) races with threads creating files."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: Path, write) -> None:
    """Run `write(file)` into a temporary file beside `path`, then rename it into place, so
    a reader never sees a half-written file whatever happens mid-write. The file's mode is
    what `open` would give it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp makes the file 0600; a file written in place gets 0666 less the umask, and
        # so does this one (a group sharing a results folder reads every file alike).
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_can_create(path: Path, flag: str) -> None:
    """`path` (a folder) exists or can be made: its nearest existing ancestor is a folder
    this process may write in. Checked before Ray starts, so that a mistyped or read-only
    `--out` is one line at once, not an error after the workers came up."""
    ancestor = Path(os.path.abspath(path))
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise UserError(f"{flag}: {ancestor} is not a folder; cannot make {path} in it")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise UserError(f"{flag}: cannot write in {ancestor} (read-only or not permitted); choose another {flag}")


def take_lock(folder: Path) -> BinaryIO:
    """An exclusive lock on `folder/.lock` (held through the returned file: closing it, or
    the file being garbage-collected with an abandoned owner, releases it), or `UserError`
    naming the host and process that hold it. Advisory (flock): distmeta's runs and searches
    respect it, on local disks (not reliably on NFS); the kernel drops it when the holder
    ends, however it ends."""
    lock = open(folder / ".lock", "a+b")  # noqa: SIM115 - the lock lives as long as the file
    me = f"{socket.gethostname()} {os.getpid()}"
    try:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(lock.fileno(), 300, 0).decode(errors="replace").strip()
        lock.close()
        if holder == me:
            raise UserError(f"--out: {folder} is in use by another run or search of this process; close it "
                            "(learner.close(), or `with MetaLearner(...)`) or choose another --out") from None
        host, _, pid = holder.rpartition(" ")
        raise UserError(f"--out: {folder} is in use by another distmeta process (pid {pid or '?'} on "
                        f"{host or '?'}); let it end or choose another --out") from None
    os.ftruncate(lock.fileno(), 0)
    os.pwrite(lock.fileno(), me.encode(), 0)
    return lock
