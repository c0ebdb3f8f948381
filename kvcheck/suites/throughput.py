"""Prefill and decode throughput of each method as a ratio to the full cache measured in the same
session (warm-up, device synchronisation, A/B interleaved repeats, median), the method's own
compression time as a share of prefill, and KV bytes held. Perf baselines are per machine key:
with no entry for this machine the timings are not measured and the test skips after gating KV bytes
(``--kvcheck-update=perf`` records them; ``kvcheck_strict_perf = true`` makes the skip a failure)."""
import pytest

from .catalog import THROUGHPUT, THROUGHPUT_GPU


def test_throughput(kv_method, kv_gate):
    kv_gate.run(THROUGHPUT, kv_method)


@pytest.mark.gpu
def test_throughput_gpu(kv_method, kv_gate):
    kv_gate.run(THROUGHPUT_GPU, kv_method)
