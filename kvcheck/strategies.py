"""Hypothesis strategies for property tests of KV-cache compression methods.

Every strategy is a value that composes: pass a strategy (or a plain value) where a size is asked
for, and ``@st.composite`` builds the shapes that depend on each other (query heads = KV heads ×
GQA groups; per-sample lengths ≤ the padded length; a budget ≤ the tokens it is taken from)::

    from hypothesis import given, strategies as st
    from kvcheck import strategies as kst

    @given(kst.cache_batches(kst.cache_shapes(head_dim=st.just(64))), kst.compression_ratios())
    def test_my_method(batch, ratio): ...

:func:`kv_tensors` draws a tensor from a seed plus the shape, not element by element: a dense
Gaussian base comes from a ``torch.Generator`` seeded by a drawn integer, a few outlier channels are
scaled up (as real keys have), and a few entries are set to hypothesis-chosen values (its edge values:
0, ±bound, tiny magnitudes). A 3 × 12 × 40 × 64 tensor then costs a handful of draws: about a
quarter of the CPU time of drawing it element-wise with ``hypothesis.extra.numpy.arrays`` (whose large
arrays are mostly one fill value anyway), and a failure still shrinks: toward seed 0, scale 0, no
outliers, no edits. :func:`array_tensors` is the
element-wise form, for small codec-level shapes where hypothesis' mostly-constant arrays (constant
groups, lone extremes) are themselves the edge cases. Every element is bounded through
``elements``/clamping, never filtered with ``assume()``: the default bound, ±1e4, stays well inside
float16's range, which the quantised codecs' float16 scales and zero-points need.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

BOUND = 1e4  # default |element| bound: inside float16's range (max 65504), where fp16 scales live
HEAD_DIMS = (8, 16, 32, 64)  # even (RoPE), multiples of 4 (2-bit packing), powers of two (group sizes)


def _strategy(value) -> st.SearchStrategy:
    """A plain value becomes ``st.just(value)``; a strategy is used as it is."""
    return value if isinstance(value, st.SearchStrategy) else st.just(value)


@dataclass(frozen=True)
class CacheShape:
    """The dimensions of one layer's cache: keys/values ``[batch, kv_heads, seq, head_dim]``, queries
    ``[batch, kv_heads × groups, seq, head_dim]`` (query head ``j`` reads KV head ``j // groups``)."""

    batch: int
    kv_heads: int
    groups: int
    seq: int
    head_dim: int

    @property
    def q_heads(self) -> int:
        return self.kv_heads * self.groups

    def kv(self, seq: int | None = None) -> tuple[int, int, int, int]:
        """``(batch, kv_heads, seq, head_dim)``."""
        return (self.batch, self.kv_heads, self.seq if seq is None else seq, self.head_dim)

    def q(self, seq: int | None = None) -> tuple[int, int, int, int]:
        """``(batch, q_heads, seq, head_dim)``."""
        return (self.batch, self.q_heads, self.seq if seq is None else seq, self.head_dim)


@st.composite
def cache_shapes(draw, batch=st.integers(1, 3), kv_heads=st.integers(1, 3), groups=st.sampled_from([1, 2, 4]),
                 seq=st.integers(1, 48), head_dim=st.sampled_from(HEAD_DIMS)) -> CacheShape:
    """A :class:`CacheShape`. Each argument is a strategy or a fixed int."""
    return CacheShape(draw(_strategy(batch)), draw(_strategy(kv_heads)), draw(_strategy(groups)),
                      draw(_strategy(seq)), draw(_strategy(head_dim)))


def _float32_bound(bound: float) -> float:
    """The largest float32 inside ``bound`` (hypothesis' width-32 floats need representable bounds)."""
    b32 = np.float32(bound)
    if float(b32) > bound:
        b32 = np.nextafter(b32, np.float32(0))
    return float(b32)


@st.composite
def kv_tensors(draw, shape, bound: float = BOUND, outlier_channels=st.integers(0, 2), max_edits: int = 4,
               scale=None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A float tensor of ``shape`` (last axis = channels) with every element in ``[-bound, bound]``.

    Dense ``N(0, scale²)`` from a drawn seed and ``scale`` (a strategy; default 0 or 1e-3..8), up to
    ``outlier_channels`` channels multiplied by a drawn factor (the outlier channels of real keys),
    clamped to the bound, then up to ``max_edits`` entries set to hypothesis-chosen values (its edge
    values land there: 0, ±bound, tiny magnitudes). Cost: a few draws whatever the shape.
    """
    shape = tuple(draw(_strategy(shape)))
    seed = draw(st.integers(0, 2 ** 32 - 1))
    if scale is None:
        scale = draw(st.floats(0.0, min(bound, 8.0)))
        if scale < 1e-3:  # tinier scales fill the tensor with float32 subnormals, slow on CPU (the
            scale = 0.0  # edits below still put tiny values at single entries)
    else:
        scale = draw(_strategy(scale))
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=gen, dtype=torch.float32) * scale
    channels = shape[-1] if shape else 0
    n_out = min(draw(_strategy(outlier_channels)), channels)
    if n_out:
        idx = draw(st.lists(st.integers(0, channels - 1), min_size=n_out, max_size=n_out, unique=True))
        factor = draw(st.floats(1.0, 100.0))
        x[..., idx] *= factor
    x = x.clamp_(-bound, bound)
    if x.numel() and max_edits:
        b32 = _float32_bound(bound)
        edits = draw(st.lists(st.tuples(st.integers(0, x.numel() - 1), st.floats(-b32, b32, width=32)),
                              max_size=max_edits))
        flat = x.view(-1)
        for i, value in edits:
            flat[i] = value
    return x.to(dtype)


@st.composite
def array_tensors(draw, shape, bound: float = BOUND, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A float tensor of ``shape`` drawn element-wise with ``hypothesis.extra.numpy.arrays`` (bounded
    ``elements``). Most entries share one fill value and a few differ — constant groups, lone
    extremes — the edge cases of group-wise quantisation. Costs grow with the size: keep shapes small
    (a few thousand entries)."""
    shape = tuple(draw(_strategy(shape)))
    b32 = _float32_bound(bound)
    a = draw(hnp.arrays(np.float32, shape, elements=st.floats(-b32, b32, width=32)))
    return torch.from_numpy(np.ascontiguousarray(a)).to(dtype)


@st.composite
def padded_lengths(draw, batch: int, seq: int, min_len: int = 1) -> list[int]:
    """Real lengths of ``batch`` left-padded samples: each in ``[min_len, seq]``, the longest ``seq``."""
    lengths = draw(st.lists(st.integers(min(min_len, seq), seq), min_size=batch, max_size=batch))
    lengths[draw(st.integers(0, batch - 1))] = seq
    return lengths


@dataclass
class CacheBatch:
    """One layer's prefill inputs for a left-padded batch.

    queries ``[b, q_heads, t, d]``; keys/values ``[b, kv_heads, t, d]``; valid ``[b, t]`` (False on left
    padding, whose slots hold garbage, never zeros); positions ``[b, t]`` true positions (0 on padding,
    as the engine gives them); lengths: real tokens per sample.
    """

    shape: CacheShape
    queries: torch.Tensor
    keys: torch.Tensor
    values: torch.Tensor
    valid: torch.Tensor
    positions: torch.Tensor
    lengths: list[int]

    @property
    def scaling(self) -> float:
        return self.shape.head_dim ** -0.5

    def __repr__(self) -> str:  # what hypothesis prints for a falsifying example: sizes, not tensors
        def mag(t):
            return f"{float(t.abs().max()):.3g}" if t.numel() else "-"

        return (f"CacheBatch({self.shape}, lengths={self.lengths}, max |q| {mag(self.queries)}, "
                f"|k| {mag(self.keys)}, |v| {mag(self.values)})")

    def _repr_pretty_(self, p, cycle) -> None:  # hypothesis' printer would list every field
        p.text(repr(self))

    def sample(self, i: int) -> "CacheBatch":
        """Sample ``i`` alone, unpadded: the same real-token tensors, bit for bit."""
        n = self.lengths[i]
        shape = CacheShape(1, self.shape.kv_heads, self.shape.groups, n, self.shape.head_dim)
        cut = slice(self.shape.seq - n, None)
        return CacheBatch(shape, self.queries[i:i + 1, :, cut], self.keys[i:i + 1, :, cut],
                          self.values[i:i + 1, :, cut], self.valid[i:i + 1, cut], self.positions[i:i + 1, cut], [n])


def left_padding(lengths: list[int], seq: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``valid`` ``[b, seq]`` and true ``positions`` ``[b, seq]`` (0 on padding) for left-padded samples."""
    valid = torch.arange(seq)[None, :] >= torch.tensor([seq - n for n in lengths])[:, None]
    return valid, (valid.long().cumsum(-1) - 1).clamp_min(0)


@st.composite
def cache_batches(draw, shape=cache_shapes(), bound: float = BOUND, min_len: int = 1, scale=None) -> CacheBatch:
    """A :class:`CacheBatch` of ``shape`` (a strategy or a :class:`CacheShape`): keys with outlier
    channels, queries and values without (``scale`` as in :func:`kv_tensors`), per-sample lengths from
    :func:`padded_lengths`, and padding slots overwritten with large garbage so that any leak of
    padding shows."""
    shape = draw(_strategy(shape))
    q = draw(kv_tensors(shape.q(), bound, outlier_channels=st.just(0), scale=scale))
    k = draw(kv_tensors(shape.kv(), bound, scale=scale))
    v = draw(kv_tensors(shape.kv(), bound, outlier_channels=st.just(0), scale=scale))
    lengths = draw(padded_lengths(shape.batch, shape.seq, min_len))
    valid, positions = left_padding(lengths, shape.seq)
    junk = torch.Generator().manual_seed(draw(st.integers(0, 2 ** 16)))
    pad = ~valid[:, None, :, None]
    for t in (q, k, v):
        t.copy_(torch.where(pad, torch.randn(t.shape, generator=junk) * min(bound, 100.0), t))
    return CacheBatch(shape, q, k, v, valid, positions, lengths)


def token_prompts(vocab: tuple[int, int] = (3, 127), min_len: int = 1, max_len: int = 48,
                  unique: bool = False) -> st.SearchStrategy[list[int]]:
    """A prompt as token ids in ``[vocab[0], vocab[1]]``. ``unique`` draws distinct ids (no repeated
    token, so no two keys of one layer-0 head share a norm)."""
    lo, hi = vocab
    if unique:
        max_len = min(max_len, hi - lo + 1)
    return st.lists(st.integers(lo, hi), min_size=min_len, max_size=max_len, unique=unique)


def prompt_batches(prompt=token_prompts(), min_size: int = 1, max_size: int = 3) -> st.SearchStrategy[list[list[int]]]:
    """A batch of prompts (lengths differ, so the engine left-pads all but the longest)."""
    return st.lists(prompt, min_size=min_size, max_size=max_size)


def compression_ratios(min_value: float = 0.0, max_value: float = 0.95) -> st.SearchStrategy[float]:
    """Shares of tokens evicted, in ``[min_value, max_value]`` ⊂ ``[0, 1)`` (0: keep everything)."""
    if not 0 <= min_value <= max_value < 1:
        raise ValueError("compression ratios lie in [0, 1)")
    return st.floats(min_value, max_value)


def bit_widths(supported=(2, 4, 8)) -> st.SearchStrategy[int]:
    """A bit width among ``supported`` (a method's ``supported_bits``)."""
    return st.sampled_from(tuple(supported))


def budgets(n_tokens) -> st.SearchStrategy[int]:
    """Tokens kept out of ``n_tokens`` (an int or a strategy): ``[1, n]`` — every ratio in ``[0, 1)``
    keeps at least one token."""
    return _strategy(n_tokens).flatmap(lambda n: st.integers(1, max(1, n)))


def ratio_for_budget(n_tokens: int, budget: int) -> float:
    """A compression ratio whose ``keep_count(n_tokens, ratio)`` is exactly ``budget`` (1 ≤ budget ≤ n).

    ``(n − budget)/n`` itself can land one token off after float rounding; half a token more is safe.
    """
    if not 1 <= budget <= n_tokens:
        raise ValueError(f"budget must lie in [1, {n_tokens}], got {budget}")
    return (n_tokens - budget + 0.5) / n_tokens


@st.composite
def layer_positions(draw, max_layers: int = 32) -> tuple[int, int]:
    """``(layer_idx, n_layers)`` with ``0 ≤ layer_idx < n_layers ≤ max_layers``, for per-layer budgets."""
    n_layers = draw(st.integers(1, max_layers))
    return draw(st.integers(0, n_layers - 1)), n_layers


def profile_share(fraction: float, **overrides):
    """``@settings`` asking for ``fraction`` of the active profile's ``max_examples`` (at least 1), so
    that costlier properties run fewer examples and one profile number scales them all; ``overrides``
    are further settings. Applied when the test module is imported, i.e. after the profile is loaded."""
    from hypothesis import settings

    return settings(max_examples=max(1, round(settings.default.max_examples * fraction)), **overrides)
