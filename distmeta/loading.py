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


class _NoAliasLoader(yaml.SafeLoader):
    """YAML without aliases: a config has no use for `*name`, and nested aliases ("a
    billion laughs") make a few lines stand for more values than memory holds."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(None, None, f"an alias (*{event.anchor}); write the value out",
                                              event.start_mark)
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        # YAML lets a later key silently replace an earlier one: a config that sets a key
        # twice has a mistake in one of the two places.
        if isinstance(node, yaml.MappingNode):
            seen: set = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                if isinstance(key, (str, int, float, bool)) and key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"key '{key}' given twice (line {key_node.start_mark.line + 1}); keep one",
                        key_node.start_mark)
                seen.add(key)
        return super().construct_mapping(node, deep)


# Larger texts are not configs: a limit makes a mistaken path (a dataset, a binary) fail at once.
MAX_YAML_BYTES = 1_000_000


def _load_yaml(text: str):
    """`text` as YAML data (no aliases); RecursionError for absurd nesting as YAMLError."""
    try:
        return yaml.load(text, Loader=_NoAliasLoader)  # a SafeLoader subclass
    except RecursionError:
        raise yaml.YAMLError("nested too deeply") from None


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
        if path.stat().st_size > MAX_YAML_BYTES:
            raise yaml.YAMLError(f"{path.stat().st_size} bytes; a config is at most {MAX_YAML_BYTES}")
        raw = _load_yaml(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"config: cannot read YAML from {path}: {first}") from None
    if raw is None:
        raise ConfigError(f"config: {path} holds no keys (empty, or comments only); expected a mapping, "
                          "e.g. a preset's keys (`distmeta presets --show NAME`)")
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
    if len(text) > 10_000:
        raise ConfigError(f"{what} {key}: a value of {len(text)} characters; expected a config value (at most 10000)")
    try:
        value = _load_yaml(text)
    except (yaml.composer.ComposerError, yaml.constructor.ConstructorError) as exc:  # an alias, a key twice
        raise ConfigError(f"{what} {key}: {exc.problem}") from None
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
