"""YAML files, built-in presets and `--set KEY=VALUE` overrides: the one loader behind
`distmeta train` configs and `distmeta tune` search configs.

    cfg = load_config("sinusoid-maml", overrides=["algorithm.inner_lr=0.05", "seed=3"])

Loading is torch-free and Ray-free, so a bad key or value is reported in well under a
second; `distmeta.experiment.build_experiment` then builds what the config names."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from distmeta.config import Config
from distmeta.errors import ConfigError

PRESET_DIR = Path(__file__).parent / "presets"


def presets() -> dict[str, Path]:
    """Built-in configs by name (`distmeta presets`)."""
    return {p.stem: p for p in sorted(PRESET_DIR.glob("*.yaml"))}


def read_yaml(source: str | Path) -> dict:
    """The mapping in a YAML file, or in the preset of that name."""
    path = Path(source)
    if not path.is_file():
        known = presets()
        if str(source) not in known:
            raise ConfigError(
                f"config: '{source}' is neither a YAML file nor a preset; "
                f"presets: {', '.join(known)}"
            )
        path = known[str(source)]
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"config: cannot read YAML from {path}: {first}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config: {path} holds a {type(raw).__name__}; expected a mapping")
    return raw


def parse_override(item: str, what: str = "--set", example: str = "seed=3") -> tuple[str, Any]:
    """`KEY=VALUE` as (dotted key, value); VALUE is parsed as YAML (`0.1`, `true`, `[40]`),
    and kept as text where it is not YAML."""
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"{what}: got '{item}'; expected KEY=VALUE, e.g. {example}")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        value = text
    return key, value


def apply_overrides(raw: dict, overrides: list[str], what: str = "--set",
                    example: str = "seed=3") -> dict:
    """A copy of `raw` with each `KEY=VALUE` of `overrides` set (dotted keys)."""
    raw = _deep_copy(raw)
    for item in overrides:
        set_dotted(raw, *parse_override(item, what, example), what)
    return raw


def set_dotted(raw: dict, key: str, value: Any, what: str = "--set") -> None:
    """`raw[a][b][c] = value` for the dotted key `a.b.c`, creating sections on the way."""
    node = raw
    parts = key.split(".")
    for depth, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(
                f"{what} {key}: '{'.'.join(parts[: depth + 1])}' is a value, not a section"
            )
        node = child
    node[parts[-1]] = value


def load_config(source: str | Path, overrides: Sequence[str] = ()) -> Config:
    """The typed config from a YAML file or preset name plus `--set` overrides (each field
    checked; what the config names is checked by `build_experiment`)."""
    return Config.from_dict(apply_overrides(read_yaml(source), list(overrides)))


def _deep_copy(obj):
    if isinstance(obj, dict):
        return {k: _deep_copy(v) for k, v in obj.items()}
    return obj
