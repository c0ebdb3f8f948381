"""Prefill and decode throughput of each method as a ratio to the full cache measured in the same
session (warm-up, device synchronisation, A/B interleaved repeats, median), the method's own
compression time as a share of prefill, and KV bytes held. Perf baselines are per machine key:
with no entry for this machine the timings are not measured and the test skips after gating KV bytes
(``--kvcheck-update=perf`` records them; ``kvcheck_strict_perf = true`` makes the skip a failure)."""
import pytest

GPU_GRID = tuple((b, n) for b in (1, 4, 16) for n in (1024, 4096, 8192))


def test_throughput(kv_method, kvcheck):
    untimed = kvcheck.untimed_reason("throughput", kv_method)
    measured = kvcheck.runner.measure_throughput(kv_method, untimed=untimed)
    kvcheck.check("throughput", kv_method, measured)


@pytest.mark.gpu
def test_throughput_gpu(kv_method, kvcheck):
    measured = kvcheck.runner.measure_throughput(kv_method, grid=GPU_GRID, repeats=7, decode_steps=16,
                                                 untimed=kvcheck.untimed_reason("throughput-gpu", kv_method))
    kvcheck.check("throughput-gpu", kv_method, measured)
