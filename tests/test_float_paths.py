"""Unchanged code passes the gates on three floating-point paths (the default, MKL and oneDNN held to
AVX2, two torch threads): ``benchmarks/float_paths.py`` over the ci tier against the committed
baselines. Slow (three runs of ``pytest suites/``)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_unchanged_code_passes_on_three_float_paths(tmp_path):
    out = tmp_path / "paths.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "float_paths.py"),
                           "--paths", "default,avx2,threads2", "--json", str(out)],
                          cwd=ROOT, capture_output=True, text=True)
    results = json.loads(out.read_text())
    assert [r["path"] for r in results] == ["default", "avx2", "threads2"]
    for r in results:
        assert r["rows"] > 0, f"{r['path']}: no kvcheck rows ({r['summary']})"
        assert r["rc"] == 0 and not r["failed"], f"{r['path']}: {r['summary']}\n" + "\n".join(r["failed"])
    assert proc.returncode == 0, proc.stdout
