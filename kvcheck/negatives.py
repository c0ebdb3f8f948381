"""The negative-sample gate: samples that ``full`` gets right and every compressed method gets wrong.

With ``--kvcheck-negatives`` the accuracy gate also keeps, per declared method set, the study's
negative samples (see :mod:`kvcheck.metrics.samples`: candidates score at least their dataset's mean
under ``full``; a candidate is negative when every compressed method scores ≤ (1 − t) × full's
score) in ``<baselines>/<model>/<tier>-<dtype>/negatives/accuracy.json``. A run whose negative set
gains samples fails, naming them. The set depends on every method, so it is judged on the controller
once all accuracy tests have reported (their per-sample scores travel like the table's rows).

Pure functions here; the plugin does the reading, writing and reporting.
"""
from __future__ import annotations

from dataclasses import dataclass

import re

from .metrics.samples import id_key, negative_samples

SUITE = "negatives"
FILE_ID = "accuracy"
REFERENCE = "full"
_ID = re.compile(r"^(.+)-s\d+-\d+$")  # <task>-L<length>-s<seed>-<index>


def dataset_of(sample_id: str) -> str:
    """The dataset of a kvcheck sample id: the part before the seed, e.g. ``passkey-L512`` of
    ``passkey-L512-s0-003``; ids of any other form all fall in one dataset, ``samples``."""
    m = _ID.match(str(sample_id))
    return m.group(1) if m else "samples"


def by_dataset(scores: dict[str, float]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for sid, score in scores.items():
        out.setdefault(dataset_of(sid), {})[sid] = float(score)
    return out


def negatives(scores: dict[str, dict[str, float]], threshold: float, rule: str) -> dict[str, dict]:
    """``{dataset: {"candidates": [...], "negative_ids": [...]}}`` from ``{method_id: {sample id: score}}``,
    which must hold ``full`` and at least one other method."""
    ref = by_dataset(scores[REFERENCE])
    others = [by_dataset(s) for m, s in sorted(scores.items()) if m != REFERENCE]
    out = {}
    for name in sorted(ref):
        d = negative_samples(ref[name], [o.get(name, {}) for o in others], threshold, rule)
        out[name] = {"candidates": list(d.candidates), "negative_ids": list(d.negative_ids)}
    return out


def all_negatives(datasets: dict[str, dict]) -> list[str]:
    return sorted((i for d in datasets.values() for i in d["negative_ids"]), key=id_key)


@dataclass(frozen=True)
class Verdict:
    status: str  # ok | regressed | improved | new | skipped
    added: list  # negative now, not in the stored set
    removed: list  # in the stored set, not negative now
    message: str


def judge(stored: dict | None, methods: list[str], datasets: dict[str, dict], threshold: float,
          rule: str, scores: dict[str, dict[str, float]], tests: str = "TESTS") -> Verdict:
    """Compare this run's negative samples with the stored file's (``None``: none stored); ``tests``
    names the accuracy test files in the accept hint."""
    now = all_negatives(datasets)
    if stored is None:
        return Verdict("new", now, [], f"no stored negative-sample set; {len(now)} negatives now")
    key = stored.get("key", {})
    if sorted(key.get("methods", [])) != sorted(methods) or key.get("threshold") != threshold \
            or key.get("rule") != rule:
        return Verdict("skipped", [], [], (
            f"negative-sample gate skipped: stored for methods {sorted(key.get('methods', []))} "
            f"(t={key.get('threshold')}, rule {key.get('rule')}), this run has {sorted(methods)} "
            f"(t={threshold}, rule {rule}); run the stored set to judge it, or to store this set instead "
            "delete the file and rerun with --kvcheck-update=new"))
    before = set(all_negatives(stored.get("datasets", {})))
    added = [i for i in now if i not in before]
    removed = sorted(before - set(now), key=id_key)
    if added:
        lines = [f"kvcheck: negative samples grew from {len(before)} to {len(now)}: full gets these right and "
                 f"every compressed method now scores ≤ {1 - threshold:g} × full's score"]
        for sid in added[:8]:
            per = ", ".join(f"{m} {scores[m].get(sid, float('nan')):g}" for m in sorted(scores) if m != REFERENCE)
            lines.append(f"    {sid}: full {scores[REFERENCE][sid]:g}; {per}")
        if len(added) > 8:
            lines.append(f"    … and {len(added) - 8} more")
        lines.append(f"  if intended, accept with: pytest {tests} --kvcheck-negatives --kvcheck-update=all")
        return Verdict("regressed", added, removed, "\n".join(lines))
    if removed:
        return Verdict("improved", [], removed, f"negative samples shrank from {len(before)} to {len(now)}")
    return Verdict("ok", [], [], f"negative samples unchanged ({len(now)})")


def document(key: dict, datasets: dict[str, dict], provenance: dict) -> dict:
    """The stored file: a baseline like the others (its one metric, the count, never gains)."""
    from .baseline import SCHEMA, metric

    return {"schema": SCHEMA, "key": key, "provenance": provenance,
            "metrics": {"negative_count": metric(len(all_negatives(datasets)), 0.0, "lower")},
            "datasets": datasets}
