"""``benchmarks/tolerance_effects.py``: tolerances beside effects, rows that cannot fail, and methods
not beating random, read from baseline files alone."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("tolerance_effects", ROOT / "benchmarks" / "tolerance_effects.py")
te = importlib.util.module_from_spec(spec)
spec.loader.exec_module(te)


def _doc(mid: str, **metrics) -> dict:
    return {"key": {"method_id": mid}, "metrics": {n: {"value": v, "tolerance": t, "direction": d, "noise": 0.0}
                                                   for n, (v, t, d) in metrics.items()}}


def write(root: Path, suite: str, doc: dict):
    (root / suite).mkdir(parents=True, exist_ok=True)
    (root / suite / f"{doc['key']['method_id']}.json").write_text(json.dumps(doc))


def test_effects_dead_rows_and_methods_below_random(tmp_path, capsys):
    write(tmp_path, "accuracy", _doc("full", **{"t.accuracy": (1.0, 0.125, "higher")}))
    write(tmp_path, "accuracy", _doc("random-r0.5-seed0", **{"t.accuracy": (0.5, 0.125, "higher")}))
    write(tmp_path, "accuracy", _doc("h2o-r0.5-rec32", **{"t.accuracy": (0.0, 0.125, "higher")}))
    write(tmp_path, "accuracy", _doc("snapkv-r0.5", **{"t.accuracy": (0.875, 0.125, "higher")}))
    rows = te.rows(te.load(tmp_path))
    assert rows == [{"suite": "accuracy", "metric": "t.accuracy", "methods": 3, "tolerance": 0.125, "noise": 0.0,
                     "effect_median": 0.5, "effect_min": 0.125, "covered": 1}]
    assert te.dead_rows(te.load(tmp_path)) == [
        "accuracy h2o-r0.5-rec32 t.accuracy = 0: cannot move in the failing direction"]
    assert te.below_random(te.load(tmp_path)) == ["h2o-r0.5-rec32 t.accuracy: 0.000 ≤ random-r0.5 0.500"]
    assert te.main(["--baselines", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "rows that cannot fail (1)" in out and "does not beat random at its ratio (1)" in out


def test_the_committed_baselines_read_and_a_missing_folder_is_one_clear_error(tmp_path, capsys):
    assert te.main([]) == 0
    assert "accuracy" in capsys.readouterr().out
    assert te.main(["--baselines", str(tmp_path / "nope")]) == 2
    assert "no baseline folder" in capsys.readouterr().err
