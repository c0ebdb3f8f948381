"""A suite is a value: its name, its measure function, its tolerance rules, its sample rule, and
which of its metrics are timings (per machine). Each suite's tolerances are in one place,
:mod:`kvcheck.suites.catalog`, and :meth:`Suite.finalize` is the only code that applies them."""
from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..judge import Measured, metric


@dataclass(frozen=True)
class Tolerance:
    """How far a metric may move: ``absolute`` c; ``relative`` max(k·value, c); ``per_count`` k / n
    (n = the samples or positions behind the metric); ``affine`` k·value + c."""
    kind: str
    k: float = 0.0
    c: float = 0.0

    def __call__(self, value: float, count: int | None = None) -> float:
        if self.kind == "absolute":
            return self.c
        if self.kind == "relative":
            return max(self.k * value, self.c)
        if self.kind == "per_count":
            if not count:
                raise ValueError("a per_count tolerance needs the count of samples or positions behind the metric")
            return self.k / count
        if self.kind == "affine":
            return self.k * value + self.c
        raise ValueError(f"unknown tolerance kind {self.kind!r}")

    def describe(self) -> str:
        return {"absolute": f"±{self.c:g}", "relative": f"max({self.k:g}·value, {self.c:g})",
                "per_count": f"{self.k:g} / n", "affine": f"{self.k:g}·value + {self.c:g}"}[self.kind]


def absolute(c: float) -> Tolerance:
    return Tolerance("absolute", c=c)


def relative(k: float, floor: float) -> Tolerance:
    return Tolerance("relative", k=k, c=floor)


def per_count(k: float = 1.0) -> Tolerance:
    return Tolerance("per_count", k=k)


def affine(k: float, c: float) -> Tolerance:
    return Tolerance("affine", k=k, c=c)


@dataclass(frozen=True)
class Rule:
    """The metrics named by ``pattern`` (``fnmatch``: ``*.accuracy`` is every task's accuracy): which
    way is better, and their tolerance."""
    pattern: str
    direction: str
    tolerance: Tolerance


@dataclass(frozen=True)
class SampleRule:
    """Per-sample judging: a sample is right when ``correct(score)`` (on the unrounded score); its
    score is stored to ``digits``; more than ``allowance`` right → wrong flips regress."""
    allowance: int
    correct: Callable[[float], bool]
    digits: int
    describe: str = ""


@dataclass
class Raw:
    """What a measure function returns: values before any tolerance. ``counts`` gives the samples or
    positions behind a metric (for ``per_count`` tolerances); ``samples`` maps ids to records whose
    ``score`` is unrounded; ``perf`` holds timings (None: not timed); ``skip_reason`` why not."""
    values: dict
    counts: dict = field(default_factory=dict)
    samples: dict | None = None
    perf: dict | None = None
    details: dict = field(default_factory=dict)
    skip_reason: str | None = None


@dataclass(frozen=True)
class SuiteContext:
    """What a measure function may know of the run: ``untimed`` is why timings would not be judged
    (then it must not measure them), or None."""
    untimed: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Suite:
    name: str  # the baseline folder; never renamed
    measure: Callable  # (workbench, method, SuiteContext) -> Raw
    rules: tuple[Rule, ...]
    samples: SampleRule | None = None
    perf: tuple[Rule, ...] = ()  # timing metrics: stored per machine
    feeds_negatives: bool = False  # its per-sample scores feed the negative-sample gate
    options: Mapping[str, Any] = field(default_factory=dict)

    def with_(self, **changes) -> "Suite":
        return dataclasses.replace(self, **changes)

    @property
    def timed(self) -> bool:
        return bool(self.perf)

    def rule(self, name: str, perf: bool = False) -> Rule:
        for r in self.perf if perf else self.rules:
            if fnmatch.fnmatchcase(name, r.pattern):
                return r
        raise KeyError(f"suite {self.name!r} has no tolerance rule for metric {name!r}")

    def _metrics(self, values: Mapping, counts: Mapping, perf: bool = False) -> dict:
        out = {}
        for name, v in values.items():
            r = self.rule(name, perf)
            out[name] = metric(v, r.tolerance(v, counts.get(name)), r.direction)
        return out

    def finalize(self, raw: Raw) -> Measured:
        """Apply the rules: metrics with their tolerances, samples rounded and judged right or wrong."""
        samples = None
        if raw.samples is not None:
            rule = self.samples
            samples = {sid: {**rec, "score": round(rec["score"], rule.digits), "correct": rule.correct(rec["score"])}
                       for sid, rec in raw.samples.items()}
        return Measured(self._metrics(raw.values, raw.counts), samples=samples,
                        perf=None if raw.perf is None else self._metrics(raw.perf, raw.counts, perf=True),
                        details=raw.details, sample_allowance=self.samples.allowance if self.samples else 0,
                        skip_reason=raw.skip_reason)
