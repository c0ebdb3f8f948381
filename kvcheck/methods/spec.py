"""The one method grammar, the same for ``kvcheck eval --method``, ``kvcheck bench --method``,
``pytest --kvcheck-methods`` and what ``kvcheck methods`` prints::

    SPEC := NAME [":" KEY "=" VALUE ("," KEY "=" VALUE)*]
    LIST := SPEC ("," SPEC)*        an item without "=" starts a new spec (";" also separates specs)

KEY is a dataclass field of the method or its id short (``r`` for ``compression_ratio``, ``w`` for
``window``, ``b`` for ``bits``, ...). ``snapkv:r=0.5,w=16``, ``full,snapkv:r=0.5,w=16,kivi`` and
``kivi:bits=4;fp8`` are all valid. The printed form of a method, ``str(MethodSpec.of(method))``,
parses back to a method with the same id.

Only :meth:`MethodSpec.build` and :meth:`MethodSpec.matches` look at method classes; parsing and
printing are plain text, so this module imports no tensor library.
"""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from ..errors import KvcheckError

GRAMMAR = "name[:key=value,key=value,...]"


def format_value(value) -> str:
    """A field value as the grammar writes it: floats exactly (``repr``), None as ``none``."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


@dataclass(frozen=True)
class MethodSpec:
    """A method name (registry name, declared factory name or exact method id) and ``key=value`` pairs,
    kept as written; :meth:`build` resolves and checks them."""

    name: str
    params: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, text: str) -> "MethodSpec":
        """``"snapkv:r=0.5,w=16"`` → ``MethodSpec("snapkv", (("r", "0.5"), ("w", "16")))``."""
        name, colon, rest = str(text).strip().partition(":")
        name = name.strip()
        if not name:
            raise KvcheckError(f"method spec {text!r} has no method name; write {GRAMMAR}, e.g. snapkv:r=0.5,w=16.")
        params = []
        items = rest.split(",")
        if colon and not rest.strip():
            items = [""]
        for item in (items if colon else []):
            key, eq, value = item.partition("=")
            if not eq or not key.strip():
                raise KvcheckError(f"bad method parameter {item.strip()!r} in {text.strip()!r}; write "
                                   "name:key=value,key=value, e.g. snapkv:r=0.5,w=16.")
            params.append((key.strip(), value.strip()))
        return cls(name, tuple(params))

    @classmethod
    def of(cls, method) -> "MethodSpec":
        """The spec that rebuilds ``method``: its name and every field, by field name."""
        return cls(method.name, tuple((f.name, format_value(getattr(method, f.name)))
                                      for f in dataclasses.fields(method)))

    def __str__(self) -> str:
        if not self.params:
            return self.name
        return self.name + ":" + ",".join(f"{k}={v}" for k, v in self.params)

    def short(self) -> str:
        """The same spec with each key written as its id short (``snapkv:r=0.5,w=16``)."""
        cls = _method_class(self.name)
        fields = _fields(cls)
        pairs = []
        for key, value in self.params:
            name = _field_name(cls, key, self.name)
            pairs.append((fields[name].metadata.get("short", name), value))
        return str(MethodSpec(self.name, tuple(pairs)))

    def resolved(self, cls=None) -> dict[str, Any]:
        """``{field name: value}`` with keys resolved and text coerced to each field's type."""
        cls = cls or _method_class(self.name)
        return resolve(cls, dict(_check_unique(self)))

    def build(self):
        """The method instance; unknown names, keys and bad values raise :class:`KvcheckError`."""
        cls = _method_class(self.name)
        return cls(**self.resolved(cls))

    def matches(self, method, factory: str | None = None) -> bool:
        """Whether ``method`` (declared by ``factory``) is what this spec selects: a bare name matches
        the method's name, its factory's name or its exact id; with parameters, the name must match
        the method's or factory's name and every given parameter must equal the method's field."""
        if not self.params:
            return self.name in (method.name, method.id, factory)
        if self.name not in (method.name, factory):
            return False
        wanted = resolve(type(method), dict(_check_unique(self)), label=self.name)
        return all(_same(getattr(method, k), v) for k, v in wanted.items())


def parse_list(values: str | Iterable[str]) -> list[MethodSpec]:
    """Specs from one string or several (repeated flags): ``"full,snapkv:r=0.5,w=16,kivi"`` → three
    specs. Within one string, an item with ``=`` and no ``:`` continues the spec before it; ``;``
    always starts a new spec."""
    if isinstance(values, str):
        values = [values]
    out: list[MethodSpec] = []
    for value in values:
        for group in str(value).split(";"):
            current: list[str] = []
            for item in group.split(","):
                item = item.strip()
                if not item:
                    continue
                key = item.partition("=")[0]
                if "=" in item and ":" not in key:
                    if not current:
                        raise KvcheckError(f"{item!r} in {value!r} has no method before it; write "
                                           f"{GRAMMAR}, e.g. snapkv:r=0.5,w=16.")
                    current.append(item)
                    continue
                if current:
                    out.append(MethodSpec.parse(",".join(current)))
                current = [item]
            if current:
                out.append(MethodSpec.parse(",".join(current)))
    return out


def build_method(name: str, **params):
    """``build_method("snapkv", compression_ratio=0.5)``: keys may be field names or shorts; text
    values are coerced to the field's type, other values are passed as given, None means default."""
    cls = _method_class(name)
    return cls(**resolve(cls, {k: v for k, v in params.items() if v is not None}))


def keys_help(cls) -> str:
    """``compression_ratio (r), window (w), ...``: the keys a method takes."""
    fields = _fields(cls)
    return ", ".join(f"{n} ({f.metadata['short']})" if f.metadata.get("short", n) != n else n
                     for n, f in fields.items()) or "none"


def resolve(cls, params: Mapping[str, Any], label: str | None = None) -> dict[str, Any]:
    """Keys → field names; text → the field's type. Errors name the method, the key and what to write."""
    label = label or cls.name
    hints = typing.get_type_hints(cls)
    out: dict[str, Any] = {}
    for key, value in params.items():
        name = _field_name(cls, key, label)
        if name in out:
            raise KvcheckError(f"method {label!r} is given {name} twice; write each parameter once.")
        out[name] = _coerce(value, hints.get(name), f"{label}.{name}") if isinstance(value, str) else value
    return out


def _method_class(name: str):
    from . import get_method_class  # the registry imports every method (and torch): only when building

    return get_method_class(name)


def _fields(cls) -> dict:
    return {f.name: f for f in dataclasses.fields(cls)}


def _field_name(cls, key: str, label: str | None = None) -> str:
    fields = _fields(cls)
    if key in fields:
        return key
    for name, f in fields.items():
        if f.metadata.get("short") == key:
            return name
    raise KvcheckError(f"method {label or cls.name!r} has no parameter {key!r}; it takes: {keys_help(cls)}.")


def _check_unique(spec: MethodSpec) -> list[tuple[str, str]]:
    seen = set()
    for k, _ in spec.params:
        if k in seen:
            raise KvcheckError(f"method spec {str(spec)!r} gives {k!r} twice; write each parameter once.")
        seen.add(k)
    return list(spec.params)


def _coerce(value: str, typ, what: str):
    """Text to ``typ`` (int, float, bool, str, or an optional of one: ``none`` is None)."""
    args = typing.get_args(typ)
    if typing.get_origin(typ) in (typing.Union, types.UnionType) and type(None) in args:
        if value.lower() == "none":
            return None
        rest = [a for a in args if a is not type(None)]
        typ = rest[0] if len(rest) == 1 else str
    try:
        if typ is bool:
            if value.lower() in ("true", "1", "yes"):
                return True
            if value.lower() in ("false", "0", "no"):
                return False
            raise ValueError(value)
        if typ is int:
            return int(value)
        if typ is float:
            return float(value)
    except ValueError:
        kind = {bool: "true or false", int: "a number (an integer)", float: "a number"}[typ]
        raise KvcheckError(f"{what} expects {kind}, got {value!r}.") from None
    return value


def _same(have, want) -> bool:
    if isinstance(have, float) and isinstance(want, (int, float)) and not isinstance(want, bool):
        return have == want or (math.isnan(have) and math.isnan(want))
    return have == want
