"""Reading the report's inputs: ``--kvcheck-report`` files, ``kvcheck eval --json`` and ``kvcheck bench
--json`` results (each checked for the fields the report reads), and per-sample records from a
baseline folder."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import KvcheckError
from ..io import read_json
from .ids import MethodRef

KINDS = {
    "kvcheck-report": "pytest --kvcheck-report FILE",
    "kvcheck-eval": "kvcheck eval --json FILE",
    "kvcheck-bench": "kvcheck bench --json FILE",
}


def is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _opt_num(v) -> bool:
    """None or any number (NaN and infinities included: a report row may hold a NaN metric; the plots
    skip non-finite values and the table prints them)."""
    return v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))


def _bad(path, what: str, kind: str) -> KvcheckError:
    return KvcheckError(f"{path}: {what}; it is not a well-formed {kind} file — regenerate it with {KINDS[kind]}.")


def check_doc(path, doc) -> str:
    """The document's kind, after checking the fields the report reads; KvcheckError otherwise."""
    kind = doc.get("kind") if isinstance(doc, dict) else None
    if kind not in KINDS:
        accepted = "; ".join(f"{k} (written by {v})" for k, v in KINDS.items())
        found = f"kind {kind!r}" if isinstance(doc, dict) and "kind" in doc else "no 'kind' field"
        raise KvcheckError(f"{path} has {found}; kvcheck report reads {accepted}.")
    if kind == "kvcheck-report":
        rows = doc.get("rows")
        if not isinstance(rows, list):
            raise _bad(path, "'rows' must be a list", kind)
        for k, r in enumerate(rows):
            if not (isinstance(r, dict) and all(isinstance(r.get(f), str) for f in ("method", "suite", "metric",
                                                                                     "status"))
                    and all(_opt_num(r.get(f)) for f in ("baseline", "now", "delta", "tolerance"))):
                raise _bad(path, f"row {k} needs string method/suite/metric/status and numeric or null "
                                 "baseline/now/delta/tolerance", kind)
            if ("method_name" in r and not isinstance(r["method_name"], str)) or \
                    ("params" in r and not isinstance(r["params"], dict)):
                raise _bad(path, f"row {k} needs a string method_name and an object params", kind)
    elif kind == "kvcheck-eval":
        if not isinstance(doc.get("task"), str) or not is_num(doc.get("length")):
            raise _bad(path, "it needs a string 'task' and a numeric 'length'", kind)
        rows, records = doc.get("rows", []), doc.get("records", {})
        if not isinstance(rows, list) or not all(isinstance(r, dict) and isinstance(r.get("method"), str)
                                                 and _opt_num(r.get("accuracy")) and _opt_num(r.get("kv_ratio"))
                                                 for r in rows):
            raise _bad(path, "'rows' must be a list of {method, accuracy, kv_ratio, ...}", kind)
        if not isinstance(records, dict):
            raise _bad(path, "'records' must map method ids to lists of records", kind)
        for m, recs in records.items():
            if not isinstance(recs, list):
                raise _bad(path, f"records of {m!r} must be a list", kind)
            for k, r in enumerate(recs):
                sid = r.get("id") if isinstance(r, dict) else None
                if not (isinstance(sid, (str, int)) and not isinstance(sid, bool)
                        and _opt_num(r.get("score")) and _opt_num(r.get("output_tokens"))):
                    raise _bad(path, f"record {k} of {m!r} needs an 'id' and numeric or null score/output_tokens",
                               kind)
    else:
        points = doc.get("points")
        if not isinstance(points, list):
            raise _bad(path, "'points' must be a list", kind)
        for k, p in enumerate(points):
            if not (isinstance(p, dict) and isinstance(p.get("method"), str) and is_num(p.get("batch"))
                    and is_num(p.get("length"))
                    and all(_opt_num(p.get(f)) for f in ("prefill_ratio", "decode_ratio", "kv_ratio", "decode_bound"))):
                raise _bad(path, f"point {k} needs a method, numeric batch and length, and numeric or null "
                                 "prefill_ratio/decode_ratio/kv_ratio/decode_bound", kind)
        work = doc.get("work", [])
        if not isinstance(work, list) or not all(
                isinstance(w, dict) and isinstance(w.get("method"), str) and is_num(w.get("batch"))
                and is_num(w.get("length")) and isinstance(w.get("predicted"), dict)
                and all(isinstance(v, dict) and all(_opt_num(x) for x in v.values()) for v in w["predicted"].values())
                for w in work):
            raise _bad(path, "'work' must be a list of {method, batch, length, predicted: {gpu: {prefill, decode}}}",
                       kind)
    return kind


@dataclass
class Inputs:
    """Everything read, in order; ``docs`` are ``(path, kind, document)``."""

    docs: list = field(default_factory=list)
    accuracy_samples: dict = field(default_factory=dict)  # method id → {sample id: baseline record}
    drift_samples: dict = field(default_factory=dict)  # method id → {sample id: baseline record}
    accuracy_metrics: dict = field(default_factory=dict)  # method id → {metric: value} from accuracy baselines
    baselines_dir: str | None = None
    refs: dict = field(default_factory=dict)  # method id → MethodRef, from rows and keys that carry them

    def of(self, kind: str) -> list:
        return [(p, d) for p, k, d in self.docs if k == kind]

    def ref(self, method_id: str):
        """The structured method of an id when an input recorded it, else the id (read by ``legacy``)."""
        return self.refs.get(method_id, method_id)

    def refs_of(self, method_ids) -> dict:
        return {m: self.refs[m] for m in method_ids if m in self.refs}


def load_inputs(paths) -> Inputs:
    if not paths:
        raise KvcheckError("no input files; pass one or more JSON results: " +
                           "; ".join(f"{k} from {v}" for k, v in KINDS.items()) + ".")
    inputs = Inputs()
    for p in paths:
        doc = read_json(Path(p))
        kind = check_doc(p, doc)
        inputs.docs.append((str(p), kind, doc))
        for r in doc.get("rows", []) if kind == "kvcheck-report" else []:
            ref = MethodRef.from_row(r)
            if ref is not None:
                inputs.refs[ref.id] = ref
    return inputs


def _suite_groups(root: Path) -> dict[Path, list[Path]]:
    groups: dict[Path, list[Path]] = {}
    for f in sorted(root.rglob("*.json")):
        if f.parent.name in ("accuracy", "drift"):
            groups.setdefault(f.parent.parent, []).append(f)
    return groups


def load_baselines(inputs: Inputs, folder) -> None:
    """Per-sample records from ``folder``'s ``accuracy/`` and ``drift/`` baseline files. ``folder`` may
    be the baseline root or one ``<model>/<tier>-<dtype>`` folder; when it holds several, the one
    matching the report's model and tier is used."""
    from .. import baseline as bl

    root = Path(folder)
    if not root.is_dir():
        raise KvcheckError(f"--baselines {folder} is not a folder; pass the baseline folder (e.g. baselines/).")
    groups = _suite_groups(root)
    if not groups:
        raise KvcheckError(f"no accuracy/ or drift/ baseline files under {folder}; pass the folder that "
                           "holds <model>/<tier>-<dtype>/accuracy/*.json.")
    if len(groups) > 1:
        wanted = {(d.get("model"), d.get("tier")) for _, d in inputs.of("kvcheck-report")}
        match = [g for g in groups if any(g.parent.name == m and g.name.startswith(f"{t}-") for m, t in wanted)]
        if len(match) != 1:
            listed = ", ".join(str(g) for g in groups)
            raise KvcheckError(f"--baselines {folder} holds several model/tier folders ({listed}); pass one of "
                               "them, e.g. --baselines baselines/<model>/<tier>-<dtype>.")
        groups = {match[0]: groups[match[0]]}
    inputs.baselines_dir = str(next(iter(groups)))
    for f in next(iter(groups.values())):
        data = bl.load(f)
        samples = data.get("samples")
        if samples is not None and not (isinstance(samples, dict)
                                        and all(isinstance(s, dict) for s in samples.values())):
            raise bl.BaselineError(f"baseline {f}: 'samples' must map ids to records; restore it from version control.")
        key = data["key"]
        method_id = key.get("method_id") or f.stem
        name, params = key.get("method"), key.get("params")
        if isinstance(name, str) and isinstance(params, dict) and (params or method_id == name):
            inputs.refs.setdefault(method_id, MethodRef(method_id, name, dict(params)))
        if f.parent.name == "accuracy":
            inputs.accuracy_samples[method_id] = samples or {}
            inputs.accuracy_metrics[method_id] = {n: m["value"] for n, m in data["metrics"].items()
                                                  if n.endswith(".accuracy") and is_num(m["value"])}
        else:
            inputs.drift_samples[method_id] = samples or {}


def report_paths(inputs: Inputs) -> list[str]:
    """The test files the ``--kvcheck-report`` inputs' rows came from (recorded since kvcheck 0.1)."""
    return sorted({p for _, d in inputs.of("kvcheck-report") for p in d.get("paths", [])})
