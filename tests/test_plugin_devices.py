"""--kvcheck-devices: each xdist worker pinned to its own GPU (the CPU twin of the multi-GPU runner)."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from kvcheck.plugin import _worker_device


def config(spec, worker=None):
    opts = {"--kvcheck-devices": spec}
    cfg = SimpleNamespace(getoption=opts.get)
    if worker is not None:
        cfg.workerinput = {"workerid": worker}
    return cfg


def test_workers_take_the_listed_gpus_round_robin():
    got = [_worker_device(config("2,5", f"gw{i}")) for i in range(5)]
    assert got == ["cuda:2", "cuda:5", "cuda:2", "cuda:5", "cuda:2"]


def test_auto_spreads_workers_over_every_visible_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert [_worker_device(config("auto", f"gw{i}")) for i in range(6)] == [
        "cuda:0", "cuda:1", "cuda:2", "cuda:3", "cuda:0", "cuda:1"]


def test_no_pinning_without_the_option_or_outside_a_worker():
    assert _worker_device(config(None, "gw0")) is None
    assert _worker_device(config("0,1")) is None  # the controller process, or no -n


@pytest.mark.parametrize("spec, say", [("auto", "found no CUDA device"), ("0,x", "'auto' or GPU indices")])
def test_bad_device_lists_get_one_clear_error(spec, say, monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    with pytest.raises(pytest.UsageError, match=say):
        _worker_device(config(spec, "gw0"))
