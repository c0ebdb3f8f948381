"""``kvcheck methods``: the registry, with every parameter and its default."""
from __future__ import annotations

import dataclasses

from ..methods import REGISTRY


def add_arguments(parser) -> None:
    pass


def run(args) -> int:
    for name in sorted(REGISTRY):
        cls = REGISTRY[name]
        params = ", ".join(f"{f.name}={f.default!r}" for f in dataclasses.fields(cls))
        doc = (cls.__module__ and __import__(cls.__module__, fromlist=["x"]).__doc__ or "").strip().splitlines()
        print(f"{name:16s} {params}")
        if doc:
            print(f"{'':16s} {doc[0]}")
    return 0
