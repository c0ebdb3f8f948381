"""Baseline files: schema, paths, atomic load/save, and comparison with tolerances (pure).

One JSON file per (model, tier-dtype, suite, method id)::

    {"schema": 1,
     "key": {"model", "tier", "dtype", "suite", "method", "method_id", "params"},
     "provenance": {...recorded, never compared...},
     "metrics": {name: {"value", "tolerance", "direction"}},
     "samples": {id: {"score", "correct", "length", "output"}},
     "perf": {machine_key: {"metrics": {...}, "provenance": {...}}}}

direction: ``higher`` (higher is better: a drop beyond tolerance regresses), ``lower`` (a rise
regresses) or ``equal`` (any move beyond tolerance regresses).
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from .errors import KvcheckError
from .io import write_json_atomic

SCHEMA = 1
DIRECTIONS = ("higher", "lower", "equal")
_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=+-]*$")


class BaselineError(KvcheckError):
    """A baseline file that cannot be used as it is (never overwritten automatically)."""


def metric(value: float, tolerance: float, direction: str) -> dict:
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}")
    return {"value": _num(value), "tolerance": _num(tolerance), "direction": direction}


def _num(v):
    return None if v is None else round(float(v), 6)


def baseline_path(root, model: str, tier: str, dtype: str, suite: str, method_id: str) -> Path:
    """``root/model/tier-dtype/suite/method_id.json``; every part must be a plain name, so a path
    can never escape ``root``."""
    parts = [model, f"{tier}-{dtype}", suite, f"{method_id}.json"]
    for p in parts:
        if not _SAFE.match(p) or ".." in p:
            raise BaselineError(f"{p!r} cannot be used in a baseline path; use letters, digits and . _ = + -.")
    root = Path(root)
    path = root.joinpath(*parts)
    if root.resolve() not in path.resolve().parents:
        raise BaselineError(f"baseline path {path} escapes the baseline dir {root}.")
    return path


def load(path: Path) -> dict | None:
    """The baseline at ``path``, or None when there is none. Corrupt, truncated, wrong- or
    future-schema files raise :class:`BaselineError` and are left untouched."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"), parse_constant=_no_constant)
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError) as exc:
        raise BaselineError(f"baseline {path} is not valid JSON ({exc}); restore it from version control "
                            "(git checkout -- FILE) or delete it and rerun with --kvcheck-update=new.") from None
    except OSError as exc:
        raise BaselineError(f"baseline {path} cannot be read ({exc.strerror}); restore the file from version "
                            "control.") from None
    if not isinstance(data, dict) or "schema" not in data:
        raise BaselineError(f"baseline {path} has no schema field: not a kvcheck baseline. Restore or delete it.")
    if not isinstance(data["schema"], int) or data["schema"] > SCHEMA:
        raise BaselineError(f"baseline {path} has schema {data['schema']!r}, newer than this kvcheck "
                            f"understands ({SCHEMA}); upgrade kvcheck.")
    if data["schema"] < SCHEMA:
        raise BaselineError(f"baseline {path} has old schema {data['schema']}; regenerate it with --kvcheck-update=all.")
    for field in ("key", "metrics"):
        if not isinstance(data.get(field), dict):
            raise BaselineError(f"baseline {path} lacks a {field!r} object; restore it from version control.")
    _check_metrics(path, "metrics", data["metrics"])
    if not isinstance(data.get("samples", {}), dict):
        raise BaselineError(f"baseline {path}: 'samples' must map sample ids to records; restore it from "
                            "version control.")
    perf = data.get("perf", {})
    if not isinstance(perf, dict) or not all(isinstance(e, dict) and isinstance(e.get("metrics"), dict)
                                             for e in perf.values()):
        raise BaselineError(f"baseline {path}: 'perf' must map machine keys to {{'metrics': ...}}; restore it "
                            "from version control.")
    for machine, entry in perf.items():
        _check_metrics(path, f"perf[{machine!r}]", entry["metrics"])
    return data


def _no_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows")


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_metrics(path: Path, where: str, metrics: dict) -> None:
    """Every metric has a direction, a finite (or null) value and a finite tolerance >= 0 (or null)."""
    for name, m in metrics.items():
        if not isinstance(m, dict) or m.get("direction") not in DIRECTIONS or "value" not in m \
                or not (m["value"] is None or _finite(m["value"])) \
                or not (m.get("tolerance") is None or (_finite(m["tolerance"]) and m["tolerance"] >= 0)):
            raise BaselineError(f"baseline {path}: {where} {name!r} is malformed (needs direction, a finite value "
                                "and a tolerance >= 0); restore it from version control.")


def save(path: Path, data: dict) -> None:
    write_json_atomic(path, data)


@dataclass
class Row:
    """One comparison: what the summary table and the JSON report show."""

    method: str
    suite: str
    metric: str
    baseline: float | None
    now: float | None
    delta: float | None
    tolerance: float | None
    direction: str
    status: str  # ok | regressed | improved | new | missing

    def as_dict(self) -> dict:
        return asdict(self)


def compare_metric(name: str, spec: dict, now: float | None, method: str, suite: str) -> Row:
    base, tol, direction = spec.get("value"), spec.get("tolerance") or 0.0, spec["direction"]
    if now is None or base is None:
        status = "missing" if now is None else "new"
        return Row(method, suite, name, base, now, None, tol, direction, status)
    delta = now - base
    if isinstance(now, float) and not math.isfinite(now):
        status = "regressed"
    elif direction == "higher":
        status = "regressed" if delta < -tol - 1e-12 else ("improved" if delta > tol + 1e-12 else "ok")
    elif direction == "lower":
        status = "regressed" if delta > tol + 1e-12 else ("improved" if delta < -tol - 1e-12 else "ok")
    else:
        status = "regressed" if abs(delta) > tol + 1e-12 else "ok"
    return Row(method, suite, name, base, now, delta, tol, direction, status)


def compare(baseline_metrics: dict, now: dict, method: str, suite: str) -> list[Row]:
    """Every stored metric against its current value (absent now → ``missing``, a regression), and
    current metrics the baseline lacks as ``new``."""
    rows = [compare_metric(n, spec, now.get(n, {}).get("value"), method, suite)
            for n, spec in sorted(baseline_metrics.items())]
    for n in sorted(set(now) - set(baseline_metrics)):
        rows.append(Row(method, suite, n, None, now[n]["value"], None, now[n]["tolerance"],
                        now[n]["direction"], "new"))
    return rows


def flipped(baseline_samples: dict, now_samples: dict) -> tuple[list[str], list[str]]:
    """(right→wrong ids, wrong→right ids) between two per-sample record maps (``correct`` field)."""
    rw, wr = [], []
    for sid in sorted(set(baseline_samples) & set(now_samples)):
        b, n = bool(baseline_samples[sid].get("correct")), bool(now_samples[sid].get("correct"))
        if b and not n:
            rw.append(sid)
        elif n and not b:
            wr.append(sid)
    return rw, wr


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.4g}"


def format_rows(rows: list[Row]) -> str:
    lines = [f"  {'metric':34s} {'baseline':>10s} {'now':>10s} {'Δ':>10s} {'tolerance':>10s}  status"]
    for r in rows:
        tol = "-" if r.tolerance is None else f"±{r.tolerance:.4g}"
        lines.append(f"  {r.metric:34s} {_fmt(r.baseline):>10s} {_fmt(r.now):>10s} {_fmt(r.delta):>10s} "
                     f"{tol:>10s}  {r.status} ({r.direction} is better)" if r.direction != "equal" else
                     f"  {r.metric:34s} {_fmt(r.baseline):>10s} {_fmt(r.now):>10s} {_fmt(r.delta):>10s} "
                     f"{tol:>10s}  {r.status}")
    return "\n".join(lines)
