"""Typed dataclasses from plain YAML data: the machinery behind every config of distmeta.

`build(cls, raw, prefix)` makes a dataclass from a mapping, coercing each value to its
field's type hint and raising `ConfigError` with the dotted key at fault; `construct` does
the same for a user's class by its constructor's signature. Nothing here knows which
configs exist, and nothing imports torch or Ray."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import math
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, Union

from distmeta.errors import ConfigError, UserError


def build(cls: type, raw: Any, prefix: str):
    """An instance of dataclass `cls` from a mapping; errors name `prefix.key`."""
    if isinstance(raw, cls):
        return raw
    where = prefix or "config"
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: expected a mapping of keys, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    kwargs = {}
    for key, value in raw.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            raise ConfigError(f"unknown key '{dotted}'; expected one of: {', '.join(names)}")
        kwargs[key] = _coerce(value, hints[key], dotted)
    return _instantiate(cls, kwargs, where)


def construct(cls: type, options: Mapping[str, Any], prefix: str):
    """`cls(**options)` with config-style errors: dataclasses are typed field by field,
    other classes are checked against their constructor's signature."""
    if dataclasses.is_dataclass(cls):
        return build(cls, options, prefix)
    params = inspect.signature(cls).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    for key in options:
        if not takes_any and key not in params:
            raise ConfigError(
                f"unknown key '{prefix}.{key}'; {cls.__name__} takes: {', '.join(params)}"
            )
    return _instantiate(cls, options, prefix)


def _instantiate(cls: type, kwargs: Mapping[str, Any], where: str):
    """`cls(**kwargs)`; whatever a user class's constructor raises becomes one ConfigError
    line (a TypeError or ValueError is the usual way to refuse a value: its message alone)."""
    try:
        return cls(**kwargs)
    except UserError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {cls.__name__}({_kw(kwargs)}) failed: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - the user's code: where it failed, in one line
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ConfigError(f"{where}: {cls.__name__}({_kw(kwargs)}) failed: {type(exc).__name__}: {text}") from None


def import_object(path: str, what: str):
    """The object at `package.module:Name`."""
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"{what}: got '{path}'; expected a built-in name or 'package.module:Name'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"{what}: cannot import module '{module_name}': {exc}") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ConfigError(f"{what}: module '{module_name}' has no '{attr}'") from None


def _coerce(value: Any, hint: Any, dotted: str):
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is Union or origin is types.UnionType:  # Optional[X], X | None
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], dotted)
    if origin is Literal:
        if value not in args:
            raise ConfigError(
                f"{dotted}: got {value!r}; expected one of: {', '.join(map(str, args))}"
            )
        return value
    if dataclasses.is_dataclass(hint):
        return build(typing.cast(type, hint), value, dotted)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{dotted}: got {value!r}; expected a list")
        return tuple(_coerce(v, args[0], f"{dotted}[{i}]") for i, v in enumerate(value))
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{dotted}: got {value!r}; expected true or false")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{dotted}: got {_short(value)}; expected an integer")
        if abs(value) >= 2**63:  # what torch, numpy and Ray can hold
            raise ConfigError(f"{dotted}: got an integer of {len(str(abs(value)))} digits; expected one below 2**63")
        return value
    if hint is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{dotted}: got {value!r}; expected a number")
        if not math.isfinite(value):
            raise ConfigError(f"{dotted}: got {value!r}; expected a finite number")
        return float(value)
    if hint is str:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)  # a path or name that YAML read as a number
        if not isinstance(value, str):
            raise ConfigError(f"{dotted}: got {value!r}; expected a string")
        return value
    if origin in (Mapping, dict) or hint in (Mapping, dict):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{dotted}: got {value!r}; expected a mapping")
        return dict(value)
    return value


def positive(name: str, value) -> None:
    """Raise ConfigError unless `value` > 0."""
    if not value > 0:
        raise ConfigError(f"{name}: got {value}; expected a value > 0")


def plain(obj):
    """Mappings and sequences as dicts and lists, all the way down (for YAML and JSON)."""
    if isinstance(obj, Mapping):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    return obj


def first_difference(a: Any, b: Any, ignore: tuple[str, ...] = (), prefix: str = ""
                     ) -> tuple[str, Any, Any] | None:
    """The first dotted key (in sorted order) whose values differ between the plain-data
    trees `a` and `b`, as (key, value in a, value in b); None when they agree. Dotted keys
    in `ignore` (a section's name covers the whole section) are not compared."""
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        for key in sorted(set(a) | set(b), key=str):
            dotted = f"{prefix}{key}"
            if dotted in ignore:
                continue
            found = first_difference(a.get(key), b.get(key), ignore, dotted + ".")
            if found is not None:
                return found
        return None
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        a, b = list(a), list(b)
    return None if a == b else (prefix.rstrip("."), a, b)


def _kw(options: Mapping) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in options.items())


def _short(value) -> str:
    """`repr(value)`, cut to 80 characters: an error line must stay one readable line."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
