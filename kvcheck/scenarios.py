"""Layer scenarios for property tests: a method, one layer's left-padded prefill and the decode chunks
that follow, drawn by hypothesis and driven through the cache exactly as the model drives it
(``cache.update``, then kvcheck's attention function, which attends and lets the layer compress)::

    from hypothesis import given, strategies as st
    from kvcheck.scenarios import drive, held, scenarios

    @given(data=st.data())
    def test_my_method_keeps_its_budget(data):
        sc = data.draw(scenarios(MyMethod(compression_ratio=0.5)))
        layer, calls = drive(sc)  # the layer as left after the last chunk; one Call per forward
        keys, values, valid, positions = held(layer)

Shapes follow :mod:`kvcheck.cache`: keys/values ``[batch, kv_heads, slots, head_dim]``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from types import SimpleNamespace

import torch
from hypothesis import strategies as st

from . import strategies as kst
from .attention import kvcheck_attention
from .cache import CompressedCache
from .layer_api import CACHE_KWARG

TIE = 1e-5  # relative score gap under which float rounding may decide a ranking


def fields(method) -> set[str]:
    """The names of a method's dataclass fields (its knobs)."""
    return {f.name for f in dataclasses.fields(method)} if dataclasses.is_dataclass(method) else set()


def head_dims(method) -> st.SearchStrategy[int]:
    """Head dims the method accepts (``int`` needs its group size to divide head_dim; a method with a
    ``head_dim_multiple``, such as nvfp4's 16-channel blocks, a multiple of it)."""
    dims = [d for d in kst.HEAD_DIMS if d % getattr(method, "head_dim_multiple", 1) == 0]
    group = getattr(method, "group_size", None)
    if method.capabilities.kind == "quant" and hasattr(method, "group") and group:
        dims = [d for d in dims if d % min(group, d) == 0]
    return st.sampled_from(dims)


# knobs redrawn by :func:`variants` (by field name): the protected regions (attention sinks, recent and
# observation windows) small enough that drawn prompts of up to 40 tokens outgrow them, odd pooling kernels
KNOBS = {"sinks": st.integers(0, 4), "recent": st.integers(0, 8), "window": st.integers(1, 8),
         "kernel": st.sampled_from([1, 3, 5, 7]),
         "target": st.integers(1, 16), "interval": st.integers(1, 4)}  # decode-time compression's size and period


@st.composite
def variants(draw, method, lengths: list[int], redraw_residual=st.booleans(), redraw_knobs=st.booleans()):
    """The method as declared, or with its knobs redrawn so that short drawn prompts still reach every
    code path: ``compression_ratio`` from :func:`kst.compression_ratios` or set to keep an exact
    :func:`kst.budgets` of one sample's tokens (1 and n included); ``bits`` from
    :func:`kst.bit_widths`; each of :data:`KNOBS` (sinks, recent, window, kernel) from its range;
    ``residual`` small or on a sample's length ± 1 (when ``redraw_residual``)."""
    names, changes = fields(method), {}
    if "compression_ratio" in names:
        how = draw(st.sampled_from(["declared", "ratio", "budget"]))
        if how == "ratio":
            changes["compression_ratio"] = draw(kst.compression_ratios())
        elif how == "budget":
            n = draw(st.sampled_from(sorted(set(lengths))))
            changes["compression_ratio"] = kst.ratio_for_budget(n, draw(kst.budgets(n)))
    if "bits" in names and len(getattr(method, "supported_bits", ())) > 1 and draw(st.booleans()):
        changes["bits"] = draw(kst.bit_widths(method.supported_bits))
    for knob, values in KNOBS.items():  # protected regions and kernels, so drawn prompts outgrow them
        if knob in names and draw(redraw_knobs):
            changes[knob] = draw(values)
    if "residual" in names and draw(redraw_residual):
        edges = sorted({max(0, n + d) for n in lengths for d in (-1, 0, 1)})
        changes["residual"] = draw(st.one_of(st.integers(0, 8), st.sampled_from(edges)))
    return dataclasses.replace(method, **changes) if changes else method


@dataclass
class Scenario:
    """A method, one layer's left-padded prefill and the decode chunks that follow (each ``(q, k,
    v)``: ``[b, q_heads, c, d]``, ``[b, kv_heads, c, d]`` ×2, every new token real)."""

    method: object
    batch: kst.CacheBatch
    layer_idx: int
    n_layers: int
    steps: list

    def __repr__(self) -> str:  # what hypothesis prints for a falsifying example
        chunks = [step[0].shape[2] for step in self.steps]
        describe = getattr(self.method, "describe", lambda: repr(self.method))
        return (f"Scenario({describe()}, {self.batch!r}, layer {self.layer_idx} of {self.n_layers}, "
                f"decode chunks {chunks})")

    def _repr_pretty_(self, p, cycle) -> None:  # hypothesis' printer would list every field
        p.text(repr(self))

    def sample(self, i: int) -> "Scenario":
        """Sample ``i`` alone: its own tensors, bit for bit, unpadded."""
        return Scenario(self.method, self.batch.sample(i), self.layer_idx, self.n_layers,
                        [tuple(t[i:i + 1] for t in step) for step in self.steps])

    def seen(self) -> list[int]:
        """Real tokens each sample has seen once every chunk is in."""
        extra = sum(step[0].shape[2] for step in self.steps)
        return [n + extra for n in self.batch.lengths]

    def originals(self, row: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Every key and value sample ``row`` has seen, indexed by true position: ``[kv_heads, seen, d]`` ×2."""
        pad = self.batch.shape.seq - self.batch.lengths[row]
        keys = torch.cat([self.batch.keys[row, :, pad:]] + [step[1][row] for step in self.steps], dim=1)
        values = torch.cat([self.batch.values[row, :, pad:]] + [step[2][row] for step in self.steps], dim=1)
        return keys, values


@st.composite
def scenarios(draw, method, bound: float = kst.BOUND, max_steps: int = 3, min_batch: int = 1,
              seq=st.integers(1, 40), scale=None, redraw_residual=st.booleans(), min_steps: int = 0,
              min_len: int = 1, redraw_knobs=st.booleans()) -> Scenario:
    """A :class:`Scenario` for ``method``: a drawn shape and batch (see :func:`kst.cache_batches`), a
    :func:`variants` of the method, a layer position among up to 8 layers and ``min_steps`` to
    ``max_steps`` decode chunks of 1–2 tokens, every sample at least ``min_len`` tokens long. ``bound`` /
    ``scale``: the tensors' (see :func:`kst.kv_tensors`)."""
    if min_len > 1:
        seq = seq.filter(lambda n: n >= min_len)
    shape = draw(kst.cache_shapes(batch=st.integers(min_batch, 3), seq=seq, head_dim=head_dims(method)))
    batch = draw(kst.cache_batches(shape, bound, min_len=min_len, scale=scale))
    m = draw(variants(method, batch.lengths, redraw_residual, redraw_knobs))
    layer_idx, n_layers = draw(kst.layer_positions(8))
    steps = []
    for _ in range(draw(st.integers(min_steps, max(min_steps, max_steps)))):
        c = draw(st.integers(1, 2))
        q = draw(kst.kv_tensors(shape.q(c), bound, outlier_channels=st.just(0), scale=scale))
        k = draw(kst.kv_tensors(shape.kv(c), bound, scale=scale))  # keys carry the outlier channels
        v = draw(kst.kv_tensors(shape.kv(c), bound, outlier_channels=st.just(0), scale=scale))
        steps.append((q, k, v))
    return Scenario(m, batch, layer_idx, n_layers, steps)


@dataclass
class Call:
    """One attention call: the queries, what they attended over, and kvcheck's output.

    q ``[b, hq, c, d]``, q_pos / q_valid ``[b, c]``; keys/values ``[b, hk, n, d]`` and key_valid /
    key_pos ``[b, hk, n]`` as the layer gave them to attention (before it compressed); out ``[b, c, hq, d]``.
    """

    q: torch.Tensor
    q_pos: torch.Tensor
    q_valid: torch.Tensor
    keys: torch.Tensor
    values: torch.Tensor
    key_valid: torch.Tensor
    key_pos: torch.Tensor
    out: torch.Tensor


def _slot_masks(layer, heads: int) -> tuple[torch.Tensor, torch.Tensor]:
    """valid / positions ``[b, heads, slots]`` of every slot the layer holds (copies)."""
    valid, positions = layer.slot_masks(heads)
    return valid.clone(), positions.clone()


def record_cuts(layer, gaps: list[float]) -> None:
    """Make this eviction layer append to ``gaps``, at every ranking, the relative score gap between the
    last kept and the first dropped token of each (sample, head). Forced keeps (infinite scores) tie
    exactly however they are computed and are ranked by slot order, which padding does not change;
    finite scores within :data:`TIE` of each other may come out in either order when a batch computes
    them with other rounding (longer softmax rows, other reduction orders)."""
    if not hasattr(layer, "select"):
        return
    original = layer.select

    def select(scores, cap, width):
        ordered = scores.float().masked_fill(~layer.valid, float("-inf")).sort(dim=-1, descending=True).values
        for b, c in enumerate(cap.tolist()):
            if 0 < c < ordered.shape[-1]:
                last, first_out = ordered[b, :, c - 1], ordered[b, :, c]
                cut = torch.isfinite(first_out) & torch.isfinite(last)
                scale = torch.maximum(last.abs(), first_out.abs()).clamp_min(1e-30)
                gaps.extend(((last - first_out) / scale)[cut].tolist())
        original(scores, cap, width)

    layer.select = select  # this instance only: the layer class is untouched


def near_tie(gaps: list[float]) -> bool:
    return any(g <= TIE for g in gaps)


@torch.inference_mode()
def drive(sc: Scenario, gaps: list[float] | None = None) -> tuple[object, list[Call]]:
    """Prefill then every chunk through kvcheck's attention function; returns (the layer, one
    :class:`Call` per forward). ``gaps``: collect the layer's ranking gaps (see :func:`record_cuts`)."""
    b = sc.batch
    cache = CompressedCache(sc.method, sc.n_layers)
    if gaps is not None:
        record_cuts(cache.layers[sc.layer_idx], gaps)
    module = SimpleNamespace(layer_idx=sc.layer_idx, is_causal=True, num_key_value_groups=b.shape.groups)
    inputs = [(b.queries, b.keys, b.values, b.positions, b.valid)]
    lengths, t = torch.tensor(b.lengths), 0
    for q, k, v in sc.steps:
        c = q.shape[2]
        pos = lengths[:, None] + t + torch.arange(c)[None]
        inputs.append((q, k, v, pos, torch.ones(pos.shape, dtype=torch.bool)))
        t += c
    calls = []
    layer = cache.layers[sc.layer_idx]
    for q, k, v, pos, valid in inputs:
        cache.begin(pos, valid)
        keys, values = cache.update(k, v, sc.layer_idx)
        key_valid, key_pos = _slot_masks(layer, keys.shape[1])
        out, _ = kvcheck_attention(module, q, keys, values, None, scaling=b.scaling, **{CACHE_KWARG: cache})
        calls.append(Call(q, pos, valid.bool(), keys.clone(), values.clone(), key_valid, key_pos, out))
    return layer, calls


def held(layer) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """What the layer holds now, as attention would read it: keys, values ``[b, h, n, d]`` (dequantised
    for quantised slots), valid and positions ``[b, h, n]``."""
    slots = layer.held()
    return slots.keys, slots.values, slots.valid, slots.positions


def kept_positions(layer, row: int) -> list[list[int]]:
    """Per KV head, the true positions held for sample ``row`` (slot order)."""
    valid, pos = _slot_masks(layer, layer.keys.shape[1])
    return [pos[row, h][valid[row, h]].tolist() for h in range(valid.shape[1])]
