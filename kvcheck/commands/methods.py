"""``kvcheck methods``: the registry, each method as a spec with its defaults (a line ``--method``,
``kvcheck bench --method`` and ``--kvcheck-methods`` accept as written), its short form, the serving
engine's setting it mirrors (where it mirrors one) and what it does."""
from __future__ import annotations

import sys


def add_arguments(parser) -> None:
    pass


def describe(cls) -> list[str]:
    """The lines printed for one method class: the spec with every default, the short form, the engine
    setting it mirrors and the first line of the method's module docstring."""
    from ..methods.spec import MethodSpec

    method = cls()
    spec = MethodSpec.of(method)
    lines = [str(spec)]
    if spec.params:
        lines.append(f"    short: {spec.short()}")
    if method.engine:
        lines.append(f"    mirrors: {method.engine}")
    doc = (sys.modules[cls.__module__].__doc__ or "").strip().splitlines()
    if doc:
        lines.append(f"    {doc[0]}")
    return lines


def run(args) -> int:
    from ..methods import REGISTRY
    from ..methods.spec import GRAMMAR

    print(f"method spec: {GRAMMAR}; keys are the field names below or their shorts")
    for name in sorted(REGISTRY):
        for line in describe(REGISTRY[name]):
            print(line)
    return 0
