"""``@kvcheck.method``: declare a compression method as a pytest fixture.

Every declared factory joins the ``kv_method`` fixture, over which every suite is parametrised::

    @kvcheck.method(params=[0.25, 0.5], ids=lambda r: f"r{r}")
    def snapkv(ratio):
        return SnapKV(compression_ratio=ratio, window=16)

``nightly`` names the params that only the nightly selection runs (``--kvcheck-nightly``): the
pre-merge gate runs the rest, so it stays fast as the catalogue grows, and the nightly job runs all.
A method named in ``--kvcheck-methods`` runs whatever the selection.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
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
    nightly: list = field(default_factory=list)  # params only the nightly selection runs

    def build(self, nightly: bool = True) -> list["Method"]:
        """The declared methods; with ``nightly=False``, the pre-merge ones only."""
        from .methods.base import Method  # imports torch: only when methods are built

        takes_arg = bool(inspect.signature(self.factory).parameters)
        values = self.params if self.params is not None else [None]
        out = []
        for v in values:
            if not nightly and v in self.nightly:
                continue
            m = self.factory(v) if takes_arg else self.factory()
            if not isinstance(m, Method):
                raise KvcheckError(f"@kvcheck.method factory {self.name!r} returned {type(m).__name__}, "
                                   "not a kvcheck Method (build one from kvcheck.methods or an adapter).")
            out.append(m)
        return out


DECLARED: dict[str, Declared] = {}


def method(params=None, ids=None, name: str | None = None, nightly=None):
    """Register the decorated factory and return it as a pytest fixture of the same name. ``nightly``:
    the params (a subset of ``params``) that only ``--kvcheck-nightly`` runs."""
    nightly = list(nightly or [])
    stray = [v for v in nightly if params is None or v not in params]
    if stray:
        raise KvcheckError(f"@kvcheck.method(nightly={nightly!r}): {stray!r} not among params={params!r}; "
                           "nightly names which of the declared params only the nightly selection runs.")
    if params is not None and nightly and all(v in nightly for v in params):
        raise KvcheckError(f"@kvcheck.method(params={params!r}, nightly={nightly!r}): every setting is nightly, so "
                           "the pre-merge gate would not run this method at all; keep at least one param out of nightly.")

    def wrap(factory):
        fname = name or factory.__name__
        DECLARED[fname] = Declared(fname, factory, list(params) if params is not None else None, ids, nightly)
        takes_arg = bool(inspect.signature(factory).parameters)

        def fixture(request):
            return factory(request.param) if takes_arg and params is not None else factory()

        fixture.__name__ = fname
        fixture.__doc__ = factory.__doc__
        return pytest.fixture(name=fname, params=params, ids=ids)(fixture)

    return wrap


def declared_methods(select: str | Iterable[str] | None = None,
                     nightly: bool = True) -> list[tuple[str, "Method"]]:
    """(factory name, method) for every declared method, filtered by ``select``: method specs as
    :mod:`kvcheck.methods.spec` parses them (one string or several, joined with commas). A bare name
    selects by factory name, method name or exact method id; ``snapkv:r=0.5`` selects the declared
    snapkv methods whose compression_ratio is 0.5. Without ``select``, ``nightly=False`` leaves out
    the settings declared nightly-only (the pre-merge selection)."""
    from .methods.spec import parse_list

    if select is not None and not isinstance(select, str):
        select = ",".join(select)
    specs = parse_list(select) if select else []
    out, seen, used = [], {}, set()
    for d in DECLARED.values():
        for m in d.build(nightly=nightly or bool(specs)):
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
