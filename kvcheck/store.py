"""Baseline files: keys, paths, strict loading and atomic saving, and a per-session store.

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
from dataclasses import dataclass
from pathlib import Path

from .errors import KvcheckError
from .io import write_json_atomic
from .judge import DIRECTIONS

SCHEMA = 1
_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=+-]*$")


class BaselineError(KvcheckError):
    """A baseline file that cannot be used as it is (never overwritten automatically)."""


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


@dataclass(frozen=True)
class BaselineKey:
    """Where one (suite, method) baseline lives: ``root/model/tier-dtype/suite/method_id.json``."""
    model: str
    tier: str
    dtype: str
    suite: str
    method_id: str

    def path(self, root) -> Path:
        return baseline_path(root, self.model, self.tier, self.dtype, self.suite, self.method_id)


class BaselineStore:
    """The baselines under one root, for one session: each file read at most once, writes staged and
    done at the end (:meth:`flush`), so a failed run never leaves half a set behind."""

    def __init__(self, root):
        self.root = Path(root)
        self._loaded: dict[Path, dict | None] = {}
        self.pending: dict[Path, dict] = {}

    def path(self, key: BaselineKey) -> Path:
        return key.path(self.root)

    def load(self, key: BaselineKey) -> dict | None:
        """The stored document (None: none); :class:`BaselineError` when it cannot be used."""
        path = self.path(key)
        if path not in self._loaded:
            self._loaded[path] = load(path)
        return self._loaded[path]

    def stage(self, path: Path, data: dict) -> None:
        self.pending[Path(path)] = data

    def flush(self) -> list[str]:
        """Write every staged file atomically; the messages of those that could not be written."""
        errors = []
        for path, data in sorted(self.pending.items()):
            try:
                save(path, data)
            except OSError as exc:
                errors.append(f"kvcheck: could not write baseline {path}: {exc}; the previous file (if any) is "
                              "unchanged. Fix the folder's permissions or pass --kvcheck-baseline-dir, then rerun.")
            self._loaded.pop(path, None)
        self.pending.clear()
        return errors
