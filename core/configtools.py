"""Build frozen dataclasses from TOML tables, with errors that name the file and the key.

Every config class in aigi (the run config, each generator's, each feature extractor's, each
detector's) is a frozen dataclass; this module turns a parsed TOML table into one. Unknown keys,
wrong types and missing required values are errors; impossible values are rejected by the
dataclass itself by raising `Invalid` from `__post_init__`.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints


class ConfigError(ValueError):
    """A bad config. The message names the file and the key."""


class NotFinite(ConfigError):
    """A float key given as inf or nan (TOML allows both): no setting in aigi means either."""


class Invalid(ValueError):
    """Raised by a config dataclass for an impossible value of one of its keys."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message


def check(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise Invalid(key, message)


def build(cls: type, data: Any, where: str, file: str = "<config>") -> Any:
    """Build dataclass `cls` from `data`; `where` is the dotted key of this table."""
    if not isinstance(data, dict):
        raise ConfigError(f"{file}: {where or 'top level'}: expected a table, got {_tname(data)}")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        key = _join(where, unknown[0])
        raise ConfigError(
            f"{file}: {key}: unknown key (known keys of [{where or 'top level'}]: "
            f"{', '.join(sorted(fields))})"
        )
    kwargs = {}
    for name, f in fields.items():
        key = _join(where, name)
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{file}: {key}: required value missing")
            continue
        kwargs[name] = convert(hints[name], data[name], key, file)
    try:
        return cls(**kwargs)
    except Invalid as e:
        raise ConfigError(f"{file}: {_join(where, e.key)}: {e.message}") from None


def convert(tp: Any, value: Any, key: str, file: str) -> Any:
    """Check `value` against type `tp`, converting TOML arrays to tuples and tables to dataclasses."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        return build(tp, value, key, file)
    if origin is Literal:
        choices = get_args(tp)
        if value not in choices:
            raise ConfigError(f"{file}: {key}: must be one of {', '.join(map(repr, choices))}, got {value!r}")
        return value
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if value is None and len(args) < len(get_args(tp)):
            return None
        if len(args) == 1:  # Optional[X]: X's own, more precise error
            return convert(args[0], value, key, file)
        tables = [a for a in args if dataclasses.is_dataclass(a)]
        if isinstance(value, dict) and len(tables) == 1:  # a table can only be that one: its error
            return convert(tables[0], value, key, file)
        not_finite = None
        for a in args:
            try:
                return convert(a, value, key, file)
            except NotFinite as e:  # the value has the right shape: its own error is the clear one
                not_finite = e
            except ConfigError:
                pass
        if not_finite is not None:
            raise not_finite
        raise ConfigError(f"{file}: {key}: expected {_tname_type(tp)}, got {_tname(value)} {value!r}")
    if origin is tuple:
        args = get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{file}: {key}: expected an array, got {_tname(value)} {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(convert(args[0], v, f"{key}[{i}]", file) for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{file}: {key}: expected an array of {len(args)} values, got {len(value)}")
        return tuple(convert(a, v, f"{key}[{i}]", file) for i, (a, v) in enumerate(zip(args, value, strict=True)))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{file}: {key}: expected a table, got {_tname(value)}")
        _, vt = get_args(tp)
        return {k: convert(vt, v, f"{key}.{k}", file) for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{file}: {key}: expected true or false, got {_tname(value)} {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{file}: {key}: expected an integer, got {_tname(value)} {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{file}: {key}: expected a number, got {_tname(value)} {value!r}")
        if not math.isfinite(value):
            raise NotFinite(f"{file}: {key}: must be a finite number, got {value}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{file}: {key}: expected a string, got {_tname(value)} {value!r}")
        return value
    raise TypeError(f"config type {tp!r} at {key} is not supported")


def to_dict(obj: Any) -> Any:
    """A dataclass config as plain JSON-able data (tuples become lists)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    return obj


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _tname(value: Any) -> str:
    return {
        str: "a string",
        int: "an integer",
        float: "a number",
        bool: "a boolean",
        list: "an array",
        dict: "a table",
    }.get(type(value), type(value).__name__)


def _tname_type(tp: Any) -> str:
    return " or ".join(getattr(a, "__name__", str(a)) for a in typing.get_args(tp))
