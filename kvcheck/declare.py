"""``@kvcheck.method``: declare a compression method as a pytest fixture.

Every declared factory joins the ``kv_method`` fixture, over which every suite is parametrised::

    @kvcheck.method(params=[0.25, 0.5], ids=lambda r: f"r{r}")
    def snapkv(ratio):
        return SnapKV(compression_ratio=ratio, window=16)
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterable

import pytest

from .errors import KvcheckError

if TYPE_CHECKING:
    from .methods.base import Method


@dataclass
class Declared:
    name: str  # the factory's name (what --kvcheck-methods selects)
    factory: Callable
    params: list | None
    ids: object

    def build(self) -> list["Method"]:
        from .methods.base import Method  # imports torch: only when methods are built

        takes_arg = bool(inspect.signature(self.factory).parameters)
        values = self.params if self.params is not None else [None]
        out = []
        for v in values:
            m = self.factory(v) if takes_arg else self.factory()
            if not isinstance(m, Method):
                raise KvcheckError(f"@kvcheck.method factory {self.name!r} returned {type(m).__name__}, "
                                   "not a kvcheck Method (build one from kvcheck.methods or an adapter).")
            out.append(m)
        return out


DECLARED: dict[str, Declared] = {}


def method(params=None, ids=None, name: str | None = None):
    """Register the decorated factory and return it as a pytest fixture of the same name."""

    def wrap(factory):
        fname = name or factory.__name__
        DECLARED[fname] = Declared(fname, factory, list(params) if params is not None else None, ids)
        takes_arg = bool(inspect.signature(factory).parameters)

        def fixture(request):
            return factory(request.param) if takes_arg and params is not None else factory()

        fixture.__name__ = fname
        fixture.__doc__ = factory.__doc__
        return pytest.fixture(name=fname, params=params, ids=ids)(fixture)

    return wrap


def declared_methods(select: str | Iterable[str] | None = None) -> list[tuple[str, "Method"]]:
    """(factory name, method) for every declared method, filtered by ``select``: method specs as
    :mod:`kvcheck.methods.spec` parses them (one string or several, joined with commas). A bare name
    selects by factory name, method name or exact method id; ``snapkv:r=0.5`` selects the declared
    snapkv methods whose compression_ratio is 0.5."""
    from .methods.spec import parse_list

    if select is not None and not isinstance(select, str):
        select = ",".join(select)
    specs = parse_list(select) if select else []
    out, seen, used = [], {}, set()
    for d in DECLARED.values():
        for m in d.build():
            hits = [s for s in specs if s.matches(m, d.name)]
            if specs and not hits:
                continue
            used.update(hits)
            if m.id in seen:
                raise KvcheckError(f"method id {m.id!r} is declared twice ({seen[m.id]} and {d.name}); "
                                   "each declared method needs distinct parameters.")
            seen[m.id] = d.name
            out.append((d.name, m))
    unknown = [s for s in specs if s not in used]
    if unknown:
        declared = ", ".join(sorted(DECLARED))
        bare = [str(s) for s in unknown if not s.params]
        if bare:
            raise KvcheckError(f"--kvcheck-methods names {', '.join(bare)}, which no @kvcheck.method declares; "
                               f"declared: {declared}.")
        ids = ", ".join(m.id for d in DECLARED.values() for m in d.build()
                        if any(m.name == s.name or d.name == s.name for s in unknown))
        raise KvcheckError(f"--kvcheck-methods {', '.join(map(str, unknown))} matches no declared method; "
                           + (f"declared of that name: {ids}." if ids else f"declared: {declared}."))
    return out
