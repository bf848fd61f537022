"""Checkpoint files: written atomically with a digest of their contents, found newest
first, read with one-line errors (a file altered since it was written among them)."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import torch

from distmeta.errors import UserError
from distmeta.fileio import atomic_write

_NAME = re.compile(r"^ckpt-(\d+)\.pt$")


def checkpoint_path(directory: Path, iteration: int) -> Path:
    return directory / f"ckpt-{iteration:07d}.pt"


def list_checkpoints(directory: Path) -> list[Path]:
    """Checkpoints in `directory`, oldest first."""
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def write_state(path: Path, state: dict) -> Path:
    """`state` with its digest (`state_digest`), written atomically to `path`."""
    atomic_write(path, lambda f: torch.save({**state, "digest": state_digest(state)}, f))
    return path


def save_checkpoint(directory: Path, iteration: int, state: dict, keep: int) -> Path:
    path = write_state(checkpoint_path(directory, iteration), state)
    for old in list_checkpoints(directory)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def state_digest(state: dict) -> str:
    """sha256 of everything in a state but its digest: tensors by dtype, shape and bytes,
    mappings in key order. A file altered after it was written (a flipped bit that the
    zip format and pickle would read without complaint) no longer matches."""
    digest = hashlib.sha256()

    def add(value) -> None:
        if isinstance(value, torch.Tensor):
            tensor = value.detach().cpu().contiguous()
            digest.update(f"T{tensor.dtype}{tuple(tensor.shape)}".encode())
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
        elif isinstance(value, dict):
            digest.update(b"{")
            for key in sorted(value, key=repr):
                digest.update(repr(key).encode())
                add(value[key])
            digest.update(b"}")
        elif isinstance(value, (list, tuple)):
            digest.update(b"[")
            for item in value:
                add(item)
            digest.update(b"]")
        else:
            digest.update(repr(value).encode())

    add({k: v for k, v in state.items() if k != "digest"})
    return digest.hexdigest()


def load_checkpoint(path: Path) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"checkpoint: {path} does not exist") from None
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a damaged file
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"checkpoint: cannot read {path}: {reason[:200]}") from None
    if not isinstance(state, dict) or "meta_params" not in state or "config" not in state:
        raise UserError(f"checkpoint: {path} is not a distmeta checkpoint")
    problem = _malformed(state)
    if problem is not None:
        raise UserError(f"checkpoint: {path} is malformed: {problem}; it was not written by distmeta as it is")
    # Checkpoints written before digests existed carry none, and are taken as they are.
    if "digest" in state and state["digest"] != state_digest(state):
        raise UserError(f"checkpoint: {path} is damaged: its contents no longer match the digest written "
                        "with it")
    return state


def shape_mismatch(expected: dict, params: dict) -> tuple[str, tuple | None, tuple | None] | None:
    """The first parameter whose shape differs between `expected` (name -> shape) and the
    tensors `params`, as (name, found shape, expected shape); None when all agree."""
    found = {k: tuple(v.shape) for k, v in params.items()}
    for key in sorted(set(expected) | set(found)):
        if expected.get(key) != found.get(key):
            return key, found.get(key), expected.get(key)
    return None


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or the newest checkpoint of a run directory."""
    path = Path(path)
    if path.is_dir():
        found = list_checkpoints(path / "checkpoints") or list_checkpoints(path)
        if not found:
            raise UserError(f"checkpoint: no checkpoint in run directory {path}")
        return found[-1]
    if not path.exists():
        raise UserError(f"checkpoint: {path} does not exist; expected a run directory or .pt file")
    return path


def _malformed(state: dict) -> str | None:
    """What in a loaded state is not the shape `MetaLearner.state()` writes; None if all is."""
    params = state["meta_params"]
    if not isinstance(params, dict) or not params:
        return f"meta_params is a {type(params).__name__}; expected a mapping of names to tensors"
    for name, value in params.items():
        if not isinstance(name, str) or not isinstance(value, torch.Tensor) or not value.is_floating_point():
            return f"meta_params[{name!r}] is a {type(value).__name__}; expected a float tensor"
        if not bool(torch.isfinite(value).all()):
            return f"meta_params[{name!r}] holds non-finite values"
    iteration = state.get("iteration")
    if isinstance(iteration, bool) or not isinstance(iteration, int) or iteration < 0:
        return f"iteration is {iteration!r}; expected an integer >= 0"
    if not isinstance(state["config"], dict):
        return f"config is a {type(state['config']).__name__}; expected a mapping"
    if not isinstance(state.get("optimizer"), dict) or "state" not in state["optimizer"]:
        return "optimizer is missing or not an optimiser's state"
    rng = state.get("torch_rng")
    if not isinstance(rng, torch.Tensor) or rng.dtype != torch.uint8 or rng.shape != torch.get_rng_state().shape:
        return "torch_rng is not a random generator's state (a 1-D uint8 tensor)"
    return None
