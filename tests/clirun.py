"""Runs the installed `distmeta` console script, as a user types it."""

import shutil
import subprocess

DISTMETA = shutil.which("distmeta")


def run(*args, check=True, timeout=300):
    assert DISTMETA, "the distmeta console script is not installed (pip install -e .)"
    proc = subprocess.run([DISTMETA, *map(str, args)], capture_output=True, text=True, check=False,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc
