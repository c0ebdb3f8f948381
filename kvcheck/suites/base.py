"""A suite is a value: its name, its measure function, its tolerance rules, its sample rule, its
noise rule, and which of its metrics are timings (per machine). Each suite's tolerances are in one
place, :mod:`kvcheck.suites.catalog`, and :meth:`Suite.finalize` is the only code that applies them.

Noise floors: when a baseline is recorded, the suite also measures the method (and its reference)
under benign perturbations: other batch compositions and left padding, which change the order of
floating-point sums but not the maths. A metric's tolerance is then max(its rule's, ``k`` × the
largest move the perturbations caused), and a sample whose outcome changes under any perturbation is
marked unstable: its flips are listed apart and never counted."""
from __future__ import annotations

import dataclasses
import fnmatch
import math
from collections.abc import Callable, Mapping, Sequence
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
    bounds: tuple | None = None  # (lowest, highest) the metric can take: a row at its end cannot fail


@dataclass(frozen=True)
class SampleRule:
    """Per-sample judging: a sample is right when ``correct(score)`` (on the unrounded score); its
    score is stored to ``digits``. Right → wrong flips of stable samples are judged with an exact
    binomial test: on clean code a stable sample flips at most ``flip_rate`` of the time (on another
    float path, say), so the gate fails when that many flips would be rarer than ``alpha``: its
    false-alarm budget (see :func:`kvcheck.judge.flip_allowance`)."""
    correct: Callable[[float], bool]
    digits: int
    describe: str = ""
    flip_rate: float = 0.01
    alpha: float = 0.01


AA_K = 3.0  # a timing's tolerance: at least 3 × its error in the run, from the A/A (full / full) ratio


@dataclass(frozen=True)
class NoiseRule:
    """How the noise floor is measured when a baseline is recorded: ``variants`` perturbed runs
    (variant 1, 2, …; variant 0 is the gated run), and the factor ``k`` on the largest move seen."""
    variants: int = 2
    k: float = 2.0


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
    work: dict | None = None  # counted work (kvcheck.work), stored per software path
    perf_noise: dict | None = None  # per timing: its error in this run, from the A/A (full/full) ratio


@dataclass(frozen=True)
class SuiteContext:
    """What a measure function may know of the run: ``untimed`` is why timings would not be judged
    (then it must not measure them), or None."""
    untimed: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    variant: int = 0  # 0: the gated run; 1, 2, …: a benign perturbation (noise floors)


@dataclass(frozen=True)
class Suite:
    name: str  # the baseline folder; never renamed
    measure: Callable  # (workbench, method, SuiteContext) -> Raw
    rules: tuple[Rule, ...]
    samples: SampleRule | None = None
    perf: tuple[Rule, ...] = ()  # timing metrics: stored per machine
    work: tuple[Rule, ...] = ()  # counted-work metrics: stored per software path
    feeds_negatives: bool = False  # its per-sample scores feed the negative-sample gate
    noise: NoiseRule | None = None  # None: deterministic values (bytes), no noise floor
    options: Mapping[str, Any] = field(default_factory=dict)

    def with_(self, **changes) -> "Suite":
        return dataclasses.replace(self, **changes)

    @property
    def timed(self) -> bool:
        return bool(self.perf)

    def rule(self, name: str, perf: bool = False, work: bool = False) -> Rule:
        for r in self.work if work else self.perf if perf else self.rules:
            if fnmatch.fnmatchcase(name, r.pattern):
                return r
        raise KeyError(f"suite {self.name!r} has no tolerance rule for metric {name!r}")

    def _metrics(self, values: Mapping, counts: Mapping, perf: bool = False, noise: Mapping | None = None,
                 work: bool = False, k: float | None = None) -> dict:
        out = {}
        for name, v in values.items():
            r = self.rule(name, perf, work)
            tol = r.tolerance(v, counts.get(name))
            spread = None if noise is None else noise.get(name)
            if spread is not None and v is not None:
                tol = max(tol, (k if k is not None else self.noise.k) * spread)
            out[name] = metric(v, tol, r.direction, noise=spread)
        return out

    def finalize(self, raw: Raw, variants: Sequence[Raw] = ()) -> Measured:
        """Apply the rules: metrics with their tolerances, samples rounded and judged right or wrong.
        With ``variants`` (the perturbed runs of a recording), each metric also gets its noise floor
        and each sample whether its outcome is stable."""
        noise = noise_floor(raw, variants) if variants and self.noise else None
        samples = None
        if raw.samples is not None:
            rule = self.samples
            samples = {}
            for sid, rec in raw.samples.items():
                right = rule.correct(rec["score"])
                out = {**rec, "score": round(rec["score"], rule.digits), "correct": right}
                if noise is not None:
                    out["stable"] = all(sid in v.samples and rule.correct(v.samples[sid]["score"]) == right
                                        for v in variants)
                samples[sid] = out
        return Measured(self._metrics(raw.values, raw.counts, noise=noise), samples=samples,
                        perf=None if raw.perf is None else self._metrics(raw.perf, raw.counts, perf=True,
                                                                          noise=raw.perf_noise, k=AA_K),
                        details=raw.details, flip_rate=self.samples.flip_rate if self.samples else None,
                        alpha=self.samples.alpha if self.samples else None, skip_reason=raw.skip_reason,
                        work=None if raw.work is None else self._metrics(raw.work, raw.counts, work=True),
                        bounds={n: r.bounds for n in raw.values if (r := self.rule(n)).bounds is not None})


def noise_floor(raw: Raw, variants: Sequence[Raw]) -> dict:
    """Per metric, the largest move any perturbed run shows from the gated run (a metric a perturbed
    run lacks, or a non-finite value, counts as no information)."""
    out = {}
    for name, v in raw.values.items():
        moves = [abs(p.values[name] - v) for p in variants
                 if v is not None and p.values.get(name) is not None and math.isfinite(p.values[name] - v)]
        out[name] = max(moves, default=0.0)
    return out
