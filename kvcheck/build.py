"""Build methods from names and CLI-style parameters."""
from __future__ import annotations

import dataclasses
import typing

from .errors import KvcheckError
from .methods import get_method_class


def _coerce(value: str, typ, what: str):
    try:
        if typ in (int, "int"):
            return int(value)
        if typ in (float, "float"):
            return float(value)
    except ValueError:
        raise KvcheckError(f"{what} expects a number, got {value!r}.") from None
    return value


def build_method(name: str, **params):
    """``build_method("snapkv", compression_ratio=0.5)``; unknown names/params give a clear error."""
    cls = get_method_class(name)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in params.items():
        if value is None:
            continue
        if key not in fields:
            raise KvcheckError(f"method {name!r} has no parameter {key!r}; it takes: {', '.join(fields) or 'none'}.")
        kwargs[key] = _coerce(value, hints.get(key), f"{name}.{key}") if isinstance(value, str) else value
    return cls(**kwargs)


def parse_method_spec(spec: str):
    """``"snapkv:compression_ratio=0.5,window=64"`` → method instance."""
    name, _, rest = spec.partition(":")
    params = {}
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        if not eq:
            raise KvcheckError(f"bad method parameter {item!r} in {spec!r}; write name:key=value,key=value.")
        params[key.strip()] = value.strip()
    return build_method(name.strip(), **params)
