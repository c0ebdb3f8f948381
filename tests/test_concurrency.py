"""Parallel baseline writes, for real: the shipped gate suites at the smoke tier on full, streaming_llm
and kivi, run with ``-n 4 --kvcheck-update=new`` into an empty baseline folder, write every expected
file exactly once — a write log kept by a small plugin loaded into every xdist worker counts the
writes — each a valid baseline keyed to its own path, with no temp file left behind. The same command
again writes nothing and leaves every byte and mtime as it was.

One run is minutes of real-model work on four workers, hence ``slow``."""
from __future__ import annotations

import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import pytest

from kvcheck import baseline as bl
from kvcheck import declare

ROOT = Path(__file__).resolve().parents[1]
SELECT = ["full", "streaming_llm", "kivi"]
SUITES = ["accuracy", "fidelity", "drift", "throughput"]  # what the four gated suites file their baselines under

WRITE_LOG = '''
"""Logs every atomic write (pid and path) to $KVCHECK_WRITE_LOG, appending."""
import os

import kvcheck.io as kio

_write = kio.write_bytes_atomic


def write_bytes_atomic(path, data):
    _write(path, data)
    fd = os.open(os.environ["KVCHECK_WRITE_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.write(fd, f"{os.getpid()} {path}\\n".encode())
    os.close(fd)


kio.write_bytes_atomic = write_bytes_atomic
'''


def tree_state(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def run_suites(tmp_path: Path, baselines: Path, log: Path, name: str):
    """pytest suites/ -n 4 (the property suite left out: it files no baselines) → (rc, junit cases, seconds)."""
    xml = tmp_path / f"{name}.xml"
    env = dict(os.environ, KVCHECK_WRITE_LOG=str(log),
               PYTHONPATH=os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])))
    cmd = [sys.executable, "-m", "pytest", "suites/", "--ignore-glob=suites/test_properties*.py", "-n", "4",
           "-p", "kvcheck_write_log", "-p", "no:cacheprovider", "-p", "no:randomly", "-q",
           "--kvcheck-tier", "smoke", "--kvcheck-methods", ",".join(SELECT),
           "--kvcheck-baseline-dir", str(baselines), "--kvcheck-update=new", f"--junitxml={xml}"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    cases = list(ET.parse(xml).getroot().iter("testcase")) if xml.exists() else []
    return proc, cases, seconds


def failures(cases) -> dict[str, str]:
    out = {}
    for c in cases:
        bad = c.find("failure") if c.find("failure") is not None else c.find("error")
        if bad is not None:
            out[f"{c.get('classname')}::{c.get('name')}"] = (bad.get("message") or "") + (bad.text or "")
    return out


@pytest.mark.slow
def test_parallel_update_writes_each_file_once_then_nothing(tmp_path):
    pytest.importorskip("xdist")
    (tmp_path / "kvcheck_write_log.py").write_text(WRITE_LOG)
    baselines, log = tmp_path / "baselines", tmp_path / "writes.log"
    ids = [m.id for _, m in declare.declared_methods(SELECT)]  # the root conftest's declarations
    assert len(ids) == 5
    expected = {f"smollm2-135m-instruct/smoke-float32/{s}/{i}.json" for s in SUITES for i in ids}

    proc, cases, first_s = run_suites(tmp_path, baselines, log, "first")
    assert proc.returncode == 0 and not failures(cases), proc.stdout[-3000:] + proc.stderr[-2000:]
    assert len(cases) == len(SUITES) * len(ids) + len(ids)  # + the throughput suite's GPU twins (skipped)
    writes = [line.split(" ", 1) for line in log.read_text().splitlines()]
    counts = Counter(str(Path(p).relative_to(baselines)) for _, p in writes)
    assert set(counts) == expected and set(counts.values()) == {1}, counts  # every file, exactly once
    writers = {pid for pid, _ in writes}
    assert len(writers) > 1  # several workers wrote, each its own files
    state = tree_state(baselines)
    assert set(state) == expected  # nothing else: no temp files, no stray paths
    for rel in expected:
        data = bl.load(baselines / rel)
        suite, method_id = Path(rel).parent.name, Path(rel).stem
        assert (data["key"]["suite"], data["key"]["method_id"], data["key"]["tier"]) == (suite, method_id, "smoke")
        assert data["metrics"] and all(m["value"] is not None for m in data["metrics"].values())

    log.unlink()
    proc, cases, second_s = run_suites(tmp_path, baselines, log, "second")
    assert not log.exists() or log.read_text() == ""  # nothing written
    assert tree_state(baselines) == state  # same bytes, same mtimes
    # timings compared with the perf entries just recorded may move beyond tolerance on a busy machine:
    # only those may fail, and they are reported as perf regressions
    failed = failures(cases)
    assert proc.returncode in (0, 1) and len(cases) == len(SUITES) * len(ids) + len(ids), proc.stdout[-3000:]
    for name, message in failed.items():
        assert "test_throughput" in name and "--kvcheck-update=perf" in message, (name, message)
    print(f"\nfirst run {first_s:.0f} s ({len(writers)} writing processes); second run {second_s:.0f} s, "
          f"{len(failed)} perf-only failures")



THREADS_TEST = """
import torch


def test_threads(request, kvcheck_session):  # a kvcheck test: the session pins threads for it
    assert torch.get_num_threads() == int(request.config.getoption("--expect"))
"""


@pytest.mark.parametrize("ini, expect", [(None, 1), ("2", 2)])
def test_cpu_threads_are_pinned(pytester, ini, expect):
    """Gated runs use a fixed number of torch threads (default 1), so results do not depend on the
    machine's core count or on -n: with 2 threads per process int4's length drift came out otherwise."""
    pytester.makeconftest("def pytest_addoption(parser):\n    parser.addoption('--expect')\n")
    pytester.makepyfile(test_threads=THREADS_TEST)
    args = ["-p", "no:cacheprovider", "--expect", str(expect)] + (["-o", f"kvcheck_cpu_threads={ini}"] if ini else [])
    pytester.runpytest_subprocess(*args).assert_outcomes(passed=1)


def test_bad_cpu_threads_is_a_usage_error(pytester):
    pytester.makepyfile(test_threads="def test_x():\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-o", "kvcheck_cpu_threads=0")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "kvcheck_cpu_threads must be a whole number >= 1" in result.stderr.str()
