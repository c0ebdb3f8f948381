"""Atomic baseline writes (temp file in the same folder, fsync, ``os.replace``).

- Fault injection: a write that fails at any step — serialising, creating the temp file, right after
  creating it, half-way through writing, at fsync, at chmod, at the rename, or interrupted by Ctrl-C —
  leaves the previous baseline byte-identical (same mtime) and no temp file behind.
- Killed writers: a process SIGKILLed at each step of a write (it announces the step, then waits to
  be killed), and one killed at random moments while it rewrites a large baseline in a loop: the file
  always loads and equals the old or the new content, whole. A killed process cannot remove its temp
  file; what it leaves is a hidden ``.NAME.*.tmp`` file that no ``*.json`` lookup sees.
"""
from __future__ import annotations

import errno
import os
import random
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

from kvcheck import baseline as bl
from kvcheck import io as kio

PACKAGE = Path(kio.__file__).resolve().parent


def doc(version: int, samples: int = 200) -> dict:
    """A baseline-shaped document; ``samples`` records make it as large as needed."""
    return {"schema": bl.SCHEMA,
            "key": {"model": "m", "tier": "ci", "dtype": "float32", "suite": "accuracy", "method": "snapkv",
                    "method_id": "snapkv-r0.5", "params": {"compression_ratio": 0.5}},
            "provenance": {"written": f"v{version}"},
            "metrics": {"passkey.accuracy": bl.metric(0.5 + version / 10, 0.125, "higher")},
            "samples": {f"s{i:06d}": {"score": float(version), "correct": bool(version), "length": i,
                                      "expected": "12345", "got": f"answer {version} " * 4} for i in range(samples)}}


def state(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.iterdir())}


@pytest.fixture
def old(tmp_path):
    path = tmp_path / "snapkv-r0.5.json"
    bl.save(path, doc(0))
    return path


def _boom(*a, **k):
    raise OSError(errno.ENOSPC, "No space left on device (injected)")


class _HalfWriter:
    """A file object that writes half of the data, then fails (a full disk, or Ctrl-C)."""

    def __init__(self, f, exc):
        self.f, self.exc = f, exc

    def write(self, data):
        self.f.write(data[:len(data) // 2])
        self.f.flush()
        raise self.exc

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


def _fdopen_failing(exc):
    real = os.fdopen
    return lambda fd, *a, **k: _HalfWriter(real(fd, *a, **k), exc)


def _fdopen_raises(fd, *a, **k):
    raise OSError(errno.EMFILE, "Too many open files (injected)")


FAULTS = {
    # step: (what to patch, replacement, exception expected, data to write)
    "serialise": (None, None, TypeError, {**doc(1), "metrics": {"kl": torch.tensor(1.0)}}),
    "create-temp": ((tempfile, "mkstemp"), _boom, OSError, doc(1)),
    "after-temp-created": ((os, "fdopen"), _fdopen_raises, OSError, doc(1)),
    "mid-write": ((os, "fdopen"), _fdopen_failing(OSError(errno.ENOSPC, "disk full (injected)")), OSError, doc(1)),
    "mid-write-ctrl-c": ((os, "fdopen"), _fdopen_failing(KeyboardInterrupt()), KeyboardInterrupt, doc(1)),
    "fsync": ((os, "fsync"), _boom, OSError, doc(1)),
    "chmod": ((os, "chmod"), _boom, OSError, doc(1)),
    "replace": ((os, "replace"), _boom, OSError, doc(1)),
}


@pytest.mark.parametrize("step", list(FAULTS))
def test_failed_write_leaves_the_previous_baseline(old, monkeypatch, step):
    target, replacement, exc, data = FAULTS[step]
    before = state(old.parent)
    if target is not None:
        monkeypatch.setattr(*target, replacement)
    with pytest.raises(exc):
        bl.save(old, data)
    monkeypatch.undo()
    assert state(old.parent) == before  # same bytes, same mtime, and no temp file left behind
    assert bl.load(old) == doc(0)


@pytest.mark.parametrize("step", ["create-temp", "mid-write", "replace"])
def test_failed_first_write_leaves_nothing(tmp_path, monkeypatch, step):
    target, replacement, exc, data = FAULTS[step]
    monkeypatch.setattr(*target, replacement)
    with pytest.raises(exc):
        bl.save(tmp_path / "sub" / "new.json", data)
    monkeypatch.undo()
    assert [p.name for p in (tmp_path / "sub").iterdir()] == []


def test_a_write_that_succeeds_replaces_the_file_whole(old):
    bl.save(old, doc(1))
    assert bl.load(old) == doc(1)
    assert [p.name for p in old.parent.iterdir()] == [old.name]
    assert oct(old.stat().st_mode & 0o777) == oct(0o666 & ~_umask())  # not mkstemp's 0600


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_session_flush_keeps_going_and_reports_the_failed_file(tmp_path, monkeypatch):
    """The plugin writes every pending baseline at the end: one failing write is reported (previous
    file intact), the others still land."""
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    bl.save(a, doc(0))
    bl.save(b, doc(0))
    before_a = state(tmp_path)["a.json"]
    real = os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: _boom() if Path(dst) == a else real(src, dst))
    fake = bl.BaselineStore(tmp_path)
    fake.stage(a, doc(1))
    fake.stage(b, doc(1))
    errors = fake.flush()
    monkeypatch.undo()
    assert len(errors) == 1 and str(a) in errors[0] and "previous file (if any) is unchanged" in errors[0]
    assert state(tmp_path)["a.json"] == before_a and bl.load(b) == doc(1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.json"] and fake.pending == {}


# ---- killed writers --------------------------------------------------------------------------------

CHILD = r'''
import os, sys, tempfile, time

# this tree's kvcheck (importing it loads no torch: start-up in well under a second)
sys.path.insert(0, os.path.dirname(sys.argv[1]))
from kvcheck import baseline as bl
from kvcheck import io as kio

path, point = sys.argv[2], sys.argv[3]


def doc(version, samples):
    return {"schema": bl.SCHEMA, "key": {"method_id": "snapkv-r0.5", "suite": "accuracy"},
            "provenance": {"written": f"v{version}"},
            "metrics": {"passkey.accuracy": bl.metric(0.5 + version / 10, 0.125, "higher")},
            "samples": {f"s{i:06d}": {"score": float(version), "correct": bool(version), "length": i,
                                      "got": f"answer {version} " * 4} for i in range(samples)}}


def announce_and_wait(*a, **k):
    print("AT", point, flush=True)
    time.sleep(120)


if point == "loop":  # rewrite a large baseline over and over, alternating two versions
    blobs = [kio.dumps(doc(v, 12000)).encode() for v in (1, 2)]  # serialised once: the loop is all writing
    n = 0
    while True:
        kio.write_bytes_atomic(path, blobs[n % 2])
        n += 1
        if n == 1:
            print("WRITING", flush=True)

if point == "after-temp-created":
    real = os.fdopen
    def fdopen(fd, *a, **k):
        announce_and_wait()
    os.fdopen = fdopen
elif point == "mid-write":
    real = os.fdopen
    class Half:
        def __init__(self, f): self.f = f
        def write(self, data):
            self.f.write(data[:len(data) // 2]); self.f.flush(); announce_and_wait()
        def __enter__(self): return self
        def __exit__(self, *e): self.f.close()
        def __getattr__(self, n): return getattr(self.f, n)
    os.fdopen = lambda fd, *a, **k: Half(real(fd, *a, **k))
elif point == "before-replace":
    os.replace = announce_and_wait
bl.save(path, doc(1, 2000))
print("DONE", flush=True)
'''


def _child(path: Path, point: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", CHILD, str(PACKAGE), str(path), point], stdout=subprocess.PIPE,
                            text=True)


def _leftovers(folder: Path, name: str) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name != name)


@pytest.mark.parametrize("point", ["after-temp-created", "mid-write", "before-replace"])
def test_writer_killed_at_each_step_leaves_the_old_baseline(old, point):
    before = old.read_bytes(), old.stat().st_mtime_ns
    proc = _child(old, point)
    try:
        assert proc.stdout.readline().split() == ["AT", point]
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert (old.read_bytes(), old.stat().st_mtime_ns) == before
    assert bl.load(old) == doc(0)
    left = _leftovers(old.parent, old.name)
    assert len(left) == 1 and left[0].startswith(f".{old.name}.") and left[0].endswith(".tmp")
    assert sorted(p.name for p in old.parent.glob("*.json")) == [old.name]  # the store never sees it
    if point == "mid-write":
        assert 0 < (old.parent / left[0]).stat().st_size < len(kio.dumps(doc(1, 2000)))


def test_writer_killed_at_random_moments_never_leaves_a_broken_baseline(tmp_path):
    """A ~2 MB baseline rewritten in a loop (two alternating versions), killed at seeded random
    moments: after each kill the file loads and is one of the versions, whole."""
    path = tmp_path / "big.json"
    bl.save(path, {"schema": bl.SCHEMA, "key": {}, "provenance": {"written": "v0"}, "metrics": {}, "samples": {}})
    rng = random.Random(0)
    seen = set()
    for _ in range(6):
        proc = _child(path, "loop")
        try:
            assert proc.stdout.readline().strip() == "WRITING"
            try:
                proc.wait(timeout=rng.uniform(0.05, 0.6))
            except subprocess.TimeoutExpired:
                pass
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            proc.stdout.close()
        data = bl.load(path)
        version = int(data["provenance"]["written"][1:])
        seen.add(version)
        if version:
            assert version in (1, 2) and len(data["samples"]) == 12000
            assert all(r["score"] == float(version) for r in data["samples"].values())
        for p in tmp_path.iterdir():
            if p != path:
                assert p.name.startswith(f".{path.name}.") and p.name.endswith(".tmp")
                p.unlink()
    assert seen & {1, 2}  # the writer got through at least one rewrite
