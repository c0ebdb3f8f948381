"""Counted work: what a run does, counted at the torch dispatch level instead of timed.

Every aten op a run dispatches is counted (views excluded: they move no data) with its FLOPs, the
bytes it touches (tensor inputs + outputs) and whether it makes the host wait (a scalar read or a
data-dependent shape), per *region* and per *phase*:

- regions: ``method`` (the method's own work: scoring, selection, quantising, dequantising),
  ``cache`` (appending to the cache), ``attention`` (the mask and the attention kernel), ``model``
  (everything else: projections, MLPs, norms, the LM head);
- phases: ``prefill`` and each decode step.

In the ``method`` region, Python lines executed outside torch itself are counted too
(``sys.settrace``), so a pure-Python loop shows where no op counter would see it. The counts depend
on the software path (device type, dtype, attention backend, torch and transformers versions,
kvcheck's own branches), not on the hardware or its timing: on one path they are the same bit for bit across runs, processes and thread
counts once one warm-up run is done. What they cannot see: the inner traffic of fused kernels (an
op's bytes are its inputs and outputs), time spent waiting, and Python work outside the method region.

The regions are entered by kvcheck's cache and attention code (:func:`region`); with no counter
active a region costs one global read.
"""
from __future__ import annotations

import contextlib
import math
import os
import sys
from collections import defaultdict
from dataclasses import dataclass, field

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from .gpus import GPUS, roofline_s

REGIONS = ("method", "cache", "attention", "model")

_ACTIVE: "WorkCounter | None" = None
_TORCH_DIR = os.path.dirname(torch.__file__)  # torch's own Python (lazy op lookups, first-call paths) is not counted

aten = torch.ops.aten
# reading a value on the host (under inference mode ``bool()`` and ``.item()`` dispatch is_nonzero /
# item, otherwise _local_scalar_dense) and ops whose output shape depends on the data
_SYNC_OPS = {aten._local_scalar_dense, aten.is_nonzero, aten.item, aten.nonzero, aten.masked_select, aten._unique2,
             aten.unique_consecutive, aten.unique_dim}
_SDPA = {getattr(aten, n) for n in ("_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_flash_attention",
                                    "_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention",
                                    "_scaled_dot_product_attention_math", "scaled_dot_product_attention")
         if hasattr(aten, n)}


class region:
    """``with region("method"):`` — work inside counts to that region (innermost wins)."""

    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name

    def __enter__(self):
        if _ACTIVE is not None:
            _ACTIVE.regions.append(self.name)
            if self.name == "method":  # the frame entering the region runs method code from here on
                sys._getframe(1).f_trace = _ACTIVE._lines

    def __exit__(self, *exc):
        if _ACTIVE is not None:
            _ACTIVE.regions.pop()


def _tensors(x):
    if isinstance(x, torch.Tensor):
        yield x
    elif isinstance(x, (list, tuple)):
        for y in x:
            yield from _tensors(y)


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def mm_flops(a_shape, b_shape) -> int:
    """2·m·k·n for ``[..., m, k] @ [..., k, n]`` (broadcast batch dims multiply; a 1-D side is a
    single row or column, as matmul treats it)."""
    a = tuple(a_shape) if len(a_shape) > 1 else (1, a_shape[0])
    b = tuple(b_shape) if len(b_shape) > 1 else (b_shape[0], 1)
    batch = math.prod(torch.broadcast_shapes(a[:-2], b[:-2]))
    return 2 * batch * a[-2] * a[-1] * b[-1]


def attention_pairs(b: int, hq: int, lq: int, lk: int, causal: bool, mask: torch.Tensor | None) -> int:
    """(query, key) pairs an attention op really scores: those its mask allows (bool: True; float: not
    −inf), broadcast over ``[b, hq, lq, lk]``; else causal (bottom-right aligned, as SDPA's is_causal
    with lq ≤ lk) or every pair. GQA shares keys, not work: each query head scores its pairs."""
    if mask is not None:
        allowed = mask if mask.dtype == torch.bool else mask > float("-inf")
        return int(allowed.expand(b, hq, lq, lk).sum())
    if causal:
        return b * hq * sum(min(lk, lk - lq + i + 1) for i in range(lq))
    return b * hq * lq * lk


def sdpa_flops(args, kwargs) -> int:
    """4·pairs·d for an SDPA op (QKᵀ and PV, each 2 FLOPs per pair and channel), with the pairs of
    :func:`attention_pairs` (causal and masked pairs are not charged)."""
    q, k, v = args[0], args[1], args[2]
    names = ("dropout_p", "is_causal", "attn_mask")
    rest = dict(zip(names, args[3:6])) if len(args) > 3 else {}
    mask = kwargs.get("attn_mask", rest.get("attn_mask"))
    if not isinstance(mask, torch.Tensor) and len(args) > 3 and isinstance(args[3], torch.Tensor):
        mask = args[3]  # scaled_dot_product_attention(q, k, v, attn_mask, ...)
    causal = bool(kwargs.get("is_causal", rest.get("is_causal", False)))
    b, hq, lq, d = q.shape
    pairs = attention_pairs(b, hq, lq, k.shape[-2], causal, mask if isinstance(mask, torch.Tensor) else None)
    return 2 * pairs * d + 2 * pairs * v.shape[-1]


def op_flops(func, args, kwargs) -> int:
    """FLOPs of one aten op: matrix products and attention (elementwise work is counted as bytes)."""
    packet = func.overloadpacket
    if packet in (aten.mm, aten.bmm, aten.matmul):
        return mm_flops(args[0].shape, args[1].shape)
    if packet in (aten.addmm, aten.baddbmm, aten.addbmm):
        return mm_flops(args[1].shape, args[2].shape)
    if packet in (aten.linear,):
        w = args[1]
        return 2 * args[0].numel() // args[0].shape[-1] * w.shape[0] * w.shape[1]
    if func in _SDPA or packet in _SDPA:
        return sdpa_flops(args, kwargs)
    return 0


@dataclass
class Work:
    """Counts per phase (``prefill``, ``decode0``, ``decode1`` …) and region: ``{phase: {region: {kind: n}}}``."""

    counts: dict = field(default_factory=dict)
    bytes_scale: float = 1.0  # GPU bytes per counted byte (the roofline's)

    def phases(self) -> list[str]:
        return list(self.counts)

    def get(self, phase: str, region: str, kind: str) -> int:
        return self.counts.get(phase, {}).get(region, {}).get(kind, 0)

    def total(self, phase: str, kind: str, regions=REGIONS) -> int:
        return sum(self.get(phase, r, kind) for r in regions)


class WorkCounter(TorchDispatchMode):
    """Counts every dispatched op into the current phase and region; ``phase(name)`` switches phase.

    Use as ``with WorkCounter() as wc: ...``; ``wc.work`` holds the counts."""

    def __init__(self, bytes_scale: float = 1.0):
        super().__init__()
        self.bytes_scale = bytes_scale  # GPU bytes per counted byte, for the roofline (fp32 counts, bf16 GPU: 0.5)
        self.regions: list[str] = []
        self.current = "prefill"
        self._counts: dict = defaultdict(lambda: defaultdict(lambda: defaultdict(int)))
        self._prev_trace = None
        self._quiet = False
        self.paused = False  # reading the result (bytes held) is not the run's work

    def phase(self, name: str) -> None:
        self.current = name

    @contextlib.contextmanager
    def pause(self):
        """Reading a result (bytes held) inside a counted run is not the run's work."""
        self.paused = True
        try:
            yield
        finally:
            self.paused = False

    @property
    def work(self) -> Work:
        return Work({p: {r: dict(k) for r, k in regions.items()} for p, regions in self._counts.items()},
                    self.bytes_scale)

    def _bucket(self):
        return self._counts[self.current][self.regions[-1] if self.regions else "model"]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self._quiet = True  # the counter's own Python (and torch's, on its behalf) is not the method's
        try:
            return self._count(func, args, kwargs or {})
        finally:
            self._quiet = False

    def _count(self, func, args, kwargs):
        out = func(*args, **kwargs)
        if func.is_view or self.paused:
            return out
        c = self._bucket()
        c["ops"] += 1
        if func.overloadpacket is aten.embedding:  # rows looked up, not the whole table
            nbytes = _nbytes(args[1]) + 2 * sum(_nbytes(t) for t in _tensors(out))
        else:
            nbytes = sum(_nbytes(t) for t in _tensors(args)) + sum(_nbytes(t) for t in _tensors(kwargs.values())) \
                + sum(_nbytes(t) for t in _tensors(out))
        c["bytes"] += nbytes
        flops = op_flops(func, args, kwargs)
        c["flops"] += flops
        if flops:  # each compute op's own roofline on every named GPU (kvcheck.metrics.roofline)
            for g in GPUS:
                c[f"roof:{g.name}"] += roofline_s(flops, nbytes * self.bytes_scale, g)
        else:
            c["mem_bytes"] += nbytes
        if func.overloadpacket in _SYNC_OPS or func in _SYNC_OPS:
            c["syncs"] += 1
        return out

    # Python lines in the method region: a frame started inside it is traced line by line
    def _trace(self, frame, event, arg):
        if not self._quiet and self.regions and self.regions[-1] == "method" and frame.f_code.co_filename != __file__ \
                and not frame.f_code.co_filename.startswith(_TORCH_DIR):
            return self._lines
        return None

    def _lines(self, frame, event, arg):
        if event == "line" and not self._quiet and self.regions and self.regions[-1] == "method" \
                and frame.f_code.co_filename != __file__:
            self._counts[self.current]["method"]["py_lines"] += 1
        return self._lines

    def __enter__(self):
        global _ACTIVE
        if _ACTIVE is not None:
            raise RuntimeError("a WorkCounter is already active")
        _ACTIVE = self
        self._prev_trace = sys.gettrace()
        sys.settrace(self._trace)
        return super().__enter__()

    def __exit__(self, *exc):
        global _ACTIVE
        try:
            return super().__exit__(*exc)
        finally:
            sys.settrace(self._prev_trace)
            _ACTIVE = None
