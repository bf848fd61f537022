"""Search configs from YAML: a file or a shipped name in `tune_configs/`, plus `--set`
overrides of the search's own keys, through the same loader as train configs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from distmeta.errors import ConfigError
from distmeta.loading import parse_override, presets, read_yaml, set_dotted
from distmeta.schema import build
from distmeta.search.spec import SearchSpec


def load_search(source: str, overrides: Sequence[str] = ()) -> SearchSpec:
    """The validated search from a YAML file (a name in `tune_configs/` also works) plus
    `--set` overrides of its keys (`num_samples=2`, `fixed.num_workers=0`,
    `search_space.algorithm.inner_lr={uniform: [0.01, 0.1]}`)."""
    path = _find(source)
    raw = read_yaml(str(path))
    return search_from_dict(raw, overrides, path.parent)


def search_from_dict(raw: Any, overrides: Sequence[str] = (), folder: Path = Path(".")) -> SearchSpec:
    """The validated search from a mapping (as in a search YAML in `folder`) plus `--set`."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"tune config: expected a mapping of keys, got {type(raw).__name__}")
    raw = dict(raw)
    leaves = {"search_space": _is_distribution, "fixed": lambda v: not isinstance(v, Mapping)}
    for section, leaf in leaves.items():
        value = raw.get(section, {})
        if value is None:
            value = {}
        if not isinstance(value, Mapping):
            raise ConfigError(f"{section}: got {value!r}; expected a mapping of dotted keys")
        raw[section] = _flatten(value, leaf)
    if isinstance(raw.get("scheduler"), str):
        raw["scheduler"] = {"name": raw["scheduler"]}
    for item in overrides:
        key, value = parse_override(item, example="num_samples=2")
        section, _, rest = key.partition(".")
        if section in ("fixed", "search_space") and rest:
            raw[section][rest] = value  # the rest is one dotted train-config key
        elif section in ("fixed", "search_space") and isinstance(value, Mapping):
            raw[section] = _flatten(value, leaves[section])
        elif section == "scheduler" and not rest and isinstance(value, str):
            raw["scheduler"] = {"name": value}  # another scheduler: its own defaults
        else:
            set_dotted(raw, key, value)
    base = raw.get("base")
    if base is None:
        raise ConfigError("base: missing; expected a preset name, a train config YAML or a mapping")
    if isinstance(base, str):
        raw["base"] = _base_path(base, folder)
    elif not isinstance(base, Mapping):
        raise ConfigError(f"base: got {base!r}; expected a preset name, a YAML path or a mapping")
    else:
        raw["base"] = dict(base)
    return build(SearchSpec, raw, "")


def shipped_configs() -> dict[str, Path]:
    """The search configs shipped in the package (`distmeta/tune_configs/`, which the
    checkout's top-level `tune_configs/` links to)."""
    folder = Path(__file__).resolve().parents[1] / "tune_configs"
    return {p.stem: p for p in sorted(folder.glob("*.yaml"))}


def _find(source: str) -> Path:
    path = Path(source)
    if path.is_file():
        return path
    shipped = shipped_configs()
    if source in shipped:
        return shipped[source]
    raise ConfigError(
        f"tune config: '{source}' is not a YAML file; shipped configs: {', '.join(shipped) or 'none found'}"
    )


def _base_path(base: str, folder: Path) -> str:
    """A base YAML relative to the tune config's folder, else the working directory, else a
    preset name. Paths become absolute: trials run in their own directories."""
    for candidate in (folder / base, Path(base)):
        if candidate.is_file():
            return str(candidate.resolve())
    if base in presets():
        return base
    raise ConfigError(
        f"base: '{base}' is neither a YAML file (looked in {folder} and the working directory) "
        f"nor a preset; presets: {', '.join(presets())}"
    )


def _is_distribution(value: Any) -> bool:
    """A leaf of search_space: anything but a section (a mapping of further mappings), so
    that `{normal: [0, 1]}` is reported as an unknown distribution, not read as a key."""
    if not isinstance(value, Mapping):
        return True
    return len(value) == 1 and not isinstance(next(iter(value.values())), Mapping)


def _flatten(mapping: Mapping, leaf, prefix: str = "") -> dict:
    out = {}
    for key, value in mapping.items():
        dotted = f"{prefix}{key}"
        if leaf(value) or not value:
            out[dotted] = value
        else:
            out.update(_flatten(value, leaf, dotted + "."))
    return out
