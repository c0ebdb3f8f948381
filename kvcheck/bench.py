"""Timing a method against the full cache in one run: warm-up, device synchronisation (CUDA events
on GPU), A/B interleaved repeats so machine drift cancels, medians and spreads. Prompts are seeded
random token ids of exactly the asked length. Peak memory of the prefill: the CUDA allocator's peak on
GPU; on Linux CPU the peak resident set size (``VmHWM``, reset before each prefill)."""
from __future__ import annotations

import contextlib
import statistics
import time
from dataclasses import dataclass

import torch

from . import engine, work
from .cache import CompressedCache, kv_ratio
from .errors import KvcheckError
from .methods.full import Full
from .metrics import throughput as tp


@dataclass
class Timing:
    prefill_s: float
    decode_step_s: float  # median over the decode steps
    compress_s: float  # time spent in the method's compression during prefill
    kv_bytes: int  # held after prefill (real)
    kv_ratio: float  # held / a full cache's, fp16-equivalent (kvcheck.cache.kv_ratio)
    peak_mem: int | None  # bytes allocated (CUDA) or resident (Linux CPU) at peak during prefill


CLOCKS = ("wall", "cpu")


class _Clock:
    """Wall clock on CPU; CUDA events on GPU (synchronised before reading). ``kind="cpu"`` reads the
    process's CPU time instead (CPU device only): on a runner shared with other work, time spent
    descheduled does not count, so ratios stay steady; run with one intra-op thread
    (``torch.set_num_threads(1)``), as idle threads spinning at a barrier count too."""

    def __init__(self, device, kind: str = "wall"):
        if kind not in CLOCKS:
            raise KvcheckError(f"unknown clock {kind!r}; choose one of {', '.join(CLOCKS)}.")
        self.cuda = torch.device(device).type == "cuda"
        if self.cuda and kind == "cpu":
            raise KvcheckError("the cpu clock times CPU runs only; on CUDA use the wall clock (CUDA events).")
        self.read = time.process_time if kind == "cpu" else time.perf_counter

    def start(self):
        if self.cuda:
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            return ev
        return self.read()

    def stop(self, start) -> float:
        if self.cuda:
            end = torch.cuda.Event(enable_timing=True)
            end.record()
            torch.cuda.synchronize()
            return start.elapsed_time(end) / 1000.0
        return self.read() - start


class _PeakMemory:
    """Peak memory of one prefill. CUDA: the allocator's peak (weights included). Linux CPU: the peak
    resident set size of the process (``VmHWM``, reset through ``/proc/self/clear_refs``), which also
    counts memory the allocator holds after freeing it: compare runs made in the same process, as
    :func:`measure_point` does. None where neither is available."""

    def __init__(self, device):
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self.ok = self.cuda

    def start(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # resets VmHWM to the current resident set
            self.ok = True
        except OSError:
            self.ok = False

    def peak(self) -> int | None:
        if self.cuda:
            return torch.cuda.max_memory_allocated(self.device)
        if not self.ok:
            return None
        try:
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        return None


def prompt_ids(lm, batch: int, length: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    vocab = lm.model.config.vocab_size
    return torch.randint(100, min(vocab, 30000), (batch, length), generator=g).to(lm.device)


@torch.inference_mode()
def time_run(lm, ids: torch.Tensor, method, decode_steps: int, clock: str = "wall") -> Timing:
    model, dev = lm.model, lm.device
    b, t = ids.shape
    clock = _Clock(dev, clock)
    valid = torch.ones(b, t, dtype=torch.bool, device=dev)
    positions = torch.arange(t, device=dev)[None].expand(b, t)
    cache = CompressedCache(method, model.config.num_hidden_layers)
    cache.time_compression = True
    if not clock.cuda:
        cache.clock = clock.read
    memory = _PeakMemory(dev)
    memory.start()
    t0 = clock.start()
    nxt = engine.forward(model, ids, positions, valid, cache)[:, -1].argmax(-1)
    prefill = clock.stop(t0)
    compress = cache.compress_s  # the prefill's share only (decode steps below add their own)
    peak = memory.peak()
    kv, ratio = cache.kv_bytes(), kv_ratio(cache, model.config, t, b)
    steps = []
    one = torch.ones(b, 1, dtype=torch.bool, device=dev)
    for step in range(decode_steps):
        pos = torch.full((b, 1), t + step, device=dev)
        t1 = clock.start()
        nxt = engine.forward(model, nxt[:, None], pos, one, cache)[:, -1].argmax(-1)
        steps.append(clock.stop(t1))
    return Timing(prefill, statistics.median(steps) if steps else 0.0, compress, kv, ratio, peak)


def weight_bytes(model) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


@dataclass
class Point:
    """One method at one (batch, length), with full measured alongside."""

    method: str
    batch: int
    length: int
    prefill_ratio: float
    decode_ratio: float
    compress_share: float
    kv_ratio: float  # fp16-equivalent bytes held / full's
    decode_bound: float  # best decode speed-up if decode is bound by bytes read: (W + KVfull)/(W + KV)
    decode_speedup: float  # measured full step time / method step time
    prefill_tok_s: float
    decode_tok_s: float
    ttft_s: float
    tpot_s: float
    e2e_s: float
    peak_mem_ratio: float | None
    prefill_spread: float
    decode_spread: float
    aa_prefill: float = 1.0  # full / full, timed in the same interleaved loop: the run's own timing noise
    aa_decode: float = 1.0

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def measure_point(lm, method, batch: int, length: int, repeats: int = 5, decode_steps: int = 8,
                  seed: int = 0, clock: str = "wall") -> Point:
    """``clock``: "wall" (CUDA events on GPU) or "cpu" (process CPU time, CPU runs only; see _Clock)."""
    ids = prompt_ids(lm, batch, length, seed)
    _Clock(lm.device, clock)  # a bad clock fails before any run
    time_run(lm, ids, Full(), 2, clock)  # warm-up both paths
    time_run(lm, ids, method, 2, clock)
    full, meth, again = [], [], []
    for _ in range(repeats):  # A/B/A': the second full run gives the A/A ratio, this run's timing noise
        full.append(time_run(lm, ids, Full(), decode_steps, clock))
        meth.append(time_run(lm, ids, method, decode_steps, clock))
        again.append(time_run(lm, ids, Full(), decode_steps, clock))
    fp, mp = [x.prefill_s for x in full], [x.prefill_s for x in meth]
    fd, md = [x.decode_step_s for x in full], [x.decode_step_s for x in meth]
    m = meth[-1]
    ttft = statistics.median(mp)
    tpot = statistics.median(md)
    peak = None
    if all(x.peak_mem for x in full + meth):
        peak = statistics.median(x.peak_mem for x in meth) / statistics.median(x.peak_mem for x in full)
    return Point(
        method=method.id, batch=batch, length=length, prefill_ratio=tp.ratio(mp, fp), decode_ratio=tp.ratio(md, fd),
        compress_share=min(x.compress_s for x in meth) / statistics.median(fp),  # fastest: noise only adds
        kv_ratio=m.kv_ratio,
        decode_bound=tp.decode_bound(weight_bytes(lm.model), full[-1].kv_bytes, m.kv_bytes),
        decode_speedup=statistics.median(fd) / tpot, prefill_tok_s=batch * length / ttft,
        decode_tok_s=batch / tpot, ttft_s=ttft, tpot_s=tpot, e2e_s=ttft + decode_steps * tpot,
        peak_mem_ratio=peak, prefill_spread=tp.spread(mp), decode_spread=tp.spread(md),
        aa_prefill=tp.ratio([x.prefill_s for x in again], fp), aa_decode=tp.ratio([x.decode_step_s for x in again], fd))


@dataclass
class Counted:
    """One counted run: the work, and the KV bytes held after prefill and after the last decode step
    (real bytes; ``kv_ratio`` is the fp16-equivalent held / a full cache's, after prefill)."""

    work: work.Work
    kv_bytes_prefill: int
    kv_bytes_end: int
    kv_ratio: float


@torch.inference_mode()
def count_run(lm, ids: torch.Tensor, method, decode_steps: int, warmup: bool = True) -> Counted:
    """Count one prefill of ``ids`` ``[b, t]`` and ``decode_steps`` greedy steps through ``method``'s
    cache, after one short uncounted warm-up run, which settles lazy initialisation."""
    model, dev = lm.model, lm.device
    one = torch.ones(ids.shape[0], 1, dtype=torch.bool, device=dev)

    def run(counter, steps, ids=ids):
        b, t = ids.shape
        valid = torch.ones(b, t, dtype=torch.bool, device=dev)
        positions = torch.arange(t, device=dev)[None].expand(b, t)
        cache = CompressedCache(method, model.config.num_hidden_layers)
        nxt = engine.forward(model, ids, positions, valid, cache)[:, -1].argmax(-1)
        with counter.pause() if counter is not None else contextlib.nullcontext():
            held, ratio = cache.kv_bytes(), kv_ratio(cache, model.config, t, b)
        for step in range(steps):
            if counter is not None:
                counter.phase(f"decode{step}")
            pos = torch.full((b, 1), t + step, device=dev)
            nxt = engine.forward(model, nxt[:, None], pos, one, cache)[:, -1].argmax(-1)
        return cache, held, ratio

    if warmup:  # a short prompt and two steps reach every lazily initialised path
        run(None, min(2, decode_steps), ids[:, :min(ids.shape[1], 64)])
    with work.WorkCounter(bytes_scale=0.5 if model.dtype == torch.float32 else 1.0) as wc:
        cache, held, ratio = run(wc, decode_steps)
        with wc.pause():
            end = cache.kv_bytes()
    return Counted(wc.work, held, end, ratio)
