"""Judging, as pure functions: no IO, no pytest, no torch.

Flips: which samples a method turns right → wrong (``lost``) and wrong → right (``gained``) against
a baseline's per-sample correctness. The one implementation the gate, ``kvcheck samples`` and the
report share.
"""
from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass


def id_key(i) -> tuple:
    """Sort key: numeric ids in numeric order, then the rest as text."""
    s = str(i)
    return (0, int(s), "") if s.isdigit() else (1, 0, s)


@dataclass(frozen=True)
class Flips:
    lost: list  # right under the baseline, wrong under the method
    gained: list  # wrong under the baseline, right under the method
    missing: list  # ids judged on one side only; not counted as flips


def flips(baseline: Mapping[Hashable, bool], method: Mapping[Hashable, bool]) -> Flips:
    """Per-sample correctness of a method against the baseline's, id by id."""
    common = baseline.keys() & method.keys()
    lost = [i for i in common if baseline[i] and not method[i]]
    gained = [i for i in common if not baseline[i] and method[i]]
    missing = list(baseline.keys() ^ method.keys())
    return Flips(*(sorted(x, key=id_key) for x in (lost, gained, missing)))
