"""Per-sample analysis against the full-cache baseline (pure functions on ``{id: score}`` maps).

Flips: which ids a method turns right → wrong and wrong → right.

Negative samples: within one dataset a sample is a *candidate* when the baseline scores it at least
the dataset's mean baseline score; it is *negative at threshold t* when every compared method scores
it ≤ (1 − t) × the baseline score. Rule ``seed`` counts zero-baseline samples like any other; rule
``strict`` never calls a sample negative when its baseline score is 0 (no method can do worse).
Only ids scored by the baseline and by every method count; the others are returned as
``missing_ids`` and are left out of the mean, the candidates and the negatives.
A task type's ratio is its negatives / its candidates, both summed over its datasets.
"""
from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

from ..errors import KvcheckError
from ..judge import Flips, flips, id_key  # noqa: F401  (re-exported)
from ..tasks.types import LONGBENCH_TASK_TYPES, TASK_TYPES

RULES = ("seed", "strict")
OTHER_TYPE = "Other"


@dataclass(frozen=True)
class DatasetNegatives:
    candidates: list  # ids with baseline score ≥ baseline_mean
    negative_ids: list
    missing_ids: list  # ids absent from the baseline or from some method: left out
    baseline_mean: float | None  # over the ids every config scored; None when there are none


def check_threshold(threshold: float) -> float:
    if not (isinstance(threshold, (int, float)) and 0.0 <= threshold < 1.0):
        raise KvcheckError(f"threshold must be in [0, 1), got {threshold!r}; e.g. 0.1 means the methods "
                           "lose at least 10 % of the baseline score.")
    return float(threshold)


def check_rule(rule: str) -> str:
    if rule not in RULES:
        raise KvcheckError(f"rule must be one of {', '.join(RULES)}, got {rule!r}.")
    return rule


def is_negative(base: float, method_scores: Sequence[float], threshold: float, rule: str = "seed") -> bool:
    """Every method scores ≤ (1 − threshold) × base (``strict`` also needs base > 0).
    Candidate selection is separate: see ``negative_samples``."""
    if rule == "strict" and base == 0:
        return False
    return all(m <= base * (1 - threshold) for m in method_scores)


def negative_samples(baseline: Mapping[Hashable, float], methods: Sequence[Mapping[Hashable, float]],
                     threshold: float = 0.1, rule: str = "seed") -> DatasetNegatives:
    """Candidates and negative samples of one dataset."""
    threshold, rule = check_threshold(threshold), check_rule(rule)
    if not methods:
        raise KvcheckError("negative samples need at least one compared method.")
    every = set(baseline).intersection(*methods)
    missing = set(baseline).union(*methods) - every
    ids = sorted(every, key=id_key)
    if not ids:
        return DatasetNegatives([], [], sorted(missing, key=id_key), None)
    mean = math.fsum(baseline[i] for i in ids) / len(ids)
    cands = [i for i in ids if baseline[i] >= mean]
    neg = [i for i in cands if is_negative(baseline[i], [m[i] for m in methods], threshold, rule)]
    return DatasetNegatives(cands, neg, sorted(missing, key=id_key), mean)


def task_type_ratios(per_dataset: Mapping[str, DatasetNegatives],
                     types: Mapping[str, str] = LONGBENCH_TASK_TYPES) -> dict[str, dict]:
    """``{type: {"negative", "candidates", "ratio"}}``, sums over each type's datasets; a dataset
    with no type in ``types`` goes under ``Other``; ratio is None when a type has no candidates."""
    sums: dict[str, list[int]] = {}
    for name, d in per_dataset.items():
        s = sums.setdefault(types.get(name, OTHER_TYPE), [0, 0])
        s[0] += len(d.negative_ids)
        s[1] += len(d.candidates)
    order = {t: k for k, t in enumerate(TASK_TYPES)}
    return {t: {"negative": n, "candidates": c, "ratio": n / c if c else None}
            for t, (n, c) in sorted(sums.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0]))}


def scores_from_eval(docs: Sequence[Mapping], method: str) -> dict[str, dict[str, float]]:
    """``{dataset: {id: score}}`` for one method id from ``kvcheck eval --json`` documents; the
    dataset is each document's ``task``. Records from several documents of one task are merged."""
    out: dict[str, dict[str, float]] = {}
    for doc in docs:
        task = doc.get("task")
        for rec in doc.get("records", {}).get(method, []):
            sid, score = rec.get("id"), rec.get("score")
            if score is None:
                raise KvcheckError(f"sample {sid!r} of {method} on {task} has no score; run kvcheck eval "
                                   "on a task that scores its samples.")
            scores = out.setdefault(task, {})
            if str(sid) in scores:
                raise KvcheckError(f"sample {sid!r} of {method} on {task} appears twice; pass each eval "
                                   "result once.")
            scores[str(sid)] = float(score)
    return out


def task_types_from_eval(docs: Sequence[Mapping]) -> dict[str, str]:
    """Task → type: LongBench's map first, then the ``task_type`` its records carry."""
    types = {}
    for doc in docs:
        task = doc.get("task")
        found = [r.get("task_type") for recs in doc.get("records", {}).values() for r in recs]
        kind = LONGBENCH_TASK_TYPES.get(task) or next((t for t in found if t), None)
        if kind:
            types.setdefault(task, kind)
    return types
