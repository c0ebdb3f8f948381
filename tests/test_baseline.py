"""The baseline store: comparisons (pure), atomic writes under faults and kills."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from kvcheck import baseline as bl
from kvcheck.io import write_json_atomic


def test_compare_directions_and_tolerances():
    base = {"acc": bl.metric(0.75, 0.125, "higher"), "kl": bl.metric(0.1, 0.01, "lower"),
            "ratio": bl.metric(0.5, 0.005, "equal"), "gone": bl.metric(1.0, 0.0, "higher")}
    now = {"acc": bl.metric(0.625, 0.125, "higher"), "kl": bl.metric(0.1101, 0.01, "lower"),
           "ratio": bl.metric(0.51, 0.005, "equal"), "extra": bl.metric(3.0, 0.1, "lower")}
    rows = {r.metric: r for r in bl.compare(base, now, "m", "s")}
    assert rows["acc"].status == "ok"  # exactly at the tolerance
    assert rows["kl"].status == "regressed" and rows["kl"].delta == pytest.approx(0.0101)
    assert rows["ratio"].status == "regressed"
    assert rows["gone"].status == "missing" and rows["extra"].status == "new"
    better = bl.compare({"acc": bl.metric(0.5, 0.1, "higher")}, {"acc": bl.metric(0.9, 0.1, "higher")}, "m", "s")
    assert better[0].status == "improved"
    nan = bl.compare({"kl": bl.metric(0.1, 0.01, "lower")}, {"kl": {"value": float("nan")}}, "m", "s")
    assert nan[0].status == "regressed"


def test_flipped_samples():
    base = {"a": {"correct": True}, "b": {"correct": False}, "c": {"correct": True}, "d": {"correct": True}}
    now = {"a": {"correct": False}, "b": {"correct": True}, "c": {"correct": True}}
    assert bl.flipped(base, now) == (["a"], ["b"])


def test_write_failure_leaves_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "b.json"
    write_json_atomic(path, {"v": 1})
    monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError):
        write_json_atomic(path, {"v": 2})
    assert json.loads(path.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["b.json"]  # no temp file left behind


def test_killed_writer_never_leaves_a_broken_file(tmp_path):
    """A writer killed at random moments mid-write: the file is always the old or a new complete version."""
    path = tmp_path / "b.json"
    write_json_atomic(path, {"n": -1, "pad": "x"})
    script = ("import sys\nfrom kvcheck.io import write_json_atomic\n"
              "for n in range(10**6):\n    write_json_atomic(sys.argv[1], {'n': n, 'pad': 'x' * 200000})\n")
    for delay in (0.05, 0.11, 0.23, 0.37, 0.5):
        proc = subprocess.Popen([sys.executable, "-c", script, str(path)])
        time.sleep(delay + 0.8)  # interpreter start-up, then some writes
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        data = json.loads(path.read_text())
        assert isinstance(data["n"], int)


def test_files_are_stable_and_human_readable(tmp_path):
    path = tmp_path / "b.json"
    write_json_atomic(path, {"metrics": {"z": 1, "a": 2}, "schema": 1})
    text = path.read_text()
    assert text.index('"a"') < text.index('"z"') and text.endswith("\n") and "\n  " in text
