"""The fast paths of the hot loops give bit-identical results to the plain computations they replace:
one-slot eviction without sorting, row copies instead of gathers, grouped (not repeated) dequantisation
scales, table lookups for packed and e4m3 codes, window attention masked only where it must be."""
from __future__ import annotations

import copy

import pytest
import torch

from kvcheck import quant
from kvcheck.bench import _Clock, _PeakMemory
from kvcheck.cache import EvictionLayer
from kvcheck.errors import KvcheckError
from kvcheck.methods import FP8
from kvcheck.methods.base import ScoreInputs


def _sorting_select(layer, scores, cap, width):
    """The ranking select() implements, written plainly: stable descending sort, gather."""
    s = scores.float().masked_fill(~layer.valid, float("-inf"))
    order = s.argsort(dim=-1, descending=True, stable=True)[..., :width]
    keep = torch.gather(layer.valid, 2, order) & (torch.arange(width)[None, None, :] < cap[:, None, None])
    idx, perm = order.sort(dim=-1)
    gidx = idx[..., None].expand(-1, -1, -1, layer.keys.shape[-1])
    return (torch.gather(layer.keys, 2, gidx), torch.gather(layer.values, 2, gidx),
            torch.gather(layer.positions, 2, idx), torch.gather(keep, 2, perm),
            torch.gather(layer.state["score"], 2, idx))


def _layer(g, b, h, n, d, pad=0, transposed=False):
    layer = EvictionLayer(None, 0, 1)
    keys = torch.randn(b, n, h, d, generator=g).transpose(1, 2) if transposed else torch.randn(b, h, n, d, generator=g)
    layer.keys, layer.values = keys, torch.randn(b, h, n, d, generator=g)
    layer.positions = torch.arange(n)[None, None].expand(b, h, n).clone()
    layer.valid = torch.ones(b, h, n, dtype=torch.bool)
    layer.valid[0, :, :pad] = False
    layer.state = {"score": torch.randn(b, h, n, generator=g)}
    return layer


@pytest.mark.parametrize("kind", ["ties", "distinct", "infinite", "nan"])
def test_select_matches_a_stable_sort_including_the_one_slot_path(kind):
    g = torch.Generator().manual_seed(0)
    fast = 0
    for trial in range(120):
        b, h, n = 1 + trial % 3, 1 + trial % 2, 2 + trial % 17
        layer = _layer(g, b, h, n, 4, pad=(trial % 5 == 0) * (trial % n), transposed=trial % 3 == 0)
        if kind == "ties":
            scores = torch.randint(0, 3, (b, h, n), generator=g).float()
        elif kind == "infinite":
            scores = torch.where(torch.rand(b, 1, n, generator=g) > 0.5, float("inf"), 1.0).expand(b, h, n)
        else:
            scores = torch.randn(b, h, n, generator=g)
            if kind == "nan":
                scores[0, 0, n // 2] = float("nan")
        width = n - 1 if trial % 2 == 0 else 1 + trial % (n - 1)
        cap = torch.full((b,), width) if trial % 7 else torch.randint(1, width + 1, (b,), generator=g)
        want = _sorting_select(layer, scores, cap, width)
        fast += width == n - 1 and bool((cap == width).all() & layer.valid.all())
        got = copy.deepcopy(layer)
        got.select(scores, cap, width)
        for name, x, y in zip(("keys", "values", "positions", "valid", "state"), want,
                              (got.keys, got.values, got.positions, got.valid, got.state["score"])):
            assert torch.equal(x, y), f"trial {trial}: {name} differ from the sorting select's"
    assert fast > 20  # the one-slot path really ran


def _per_entry_dequantize(q: quant.QTensor) -> torch.Tensor:
    """Dequantisation with every group's scale and zero repeated per entry."""
    codes = quant.unpack(q.codes, q.bits).movedim(q.axis, -1).float()

    def per_entry(t):
        return t.float().repeat_interleave(q.group_size, dim=-1)[..., q.lead_pad:]

    return (codes * per_entry(q.scale) + per_entry(q.zero)).movedim(-1, q.axis)


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("axis,group", [(2, 5), (2, 16), (3, 4), (3, 16)])
def test_grouped_dequantisation_is_bit_identical(bits, axis, group):
    g = torch.Generator().manual_seed(bits * 10 + axis)
    x = torch.randn(2, 3, 37, 16, generator=g) * 3
    valid = (torch.rand(2, 1, 37, 1, generator=g) > 0.2) if axis == 2 else None
    q = quant.quantize(x, bits, axis=axis, group_size=group, valid=valid)
    assert torch.equal(quant.dequantize(q), _per_entry_dequantize(q))
    assert torch.equal(quant.dequantize(q, torch.bfloat16), _per_entry_dequantize(q).to(torch.bfloat16))
    if bits < 8:
        assert torch.equal(quant.unpack_float(q.codes, bits), quant.unpack(q.codes, bits).float())


def test_e4m3_table_lookup_equals_the_cast():
    every = torch.arange(256, dtype=torch.uint8).view(torch.float8_e4m3fn).reshape(2, 2, 4, 16)
    got = FP8().dequantize(type(FP8().quantize(torch.ones(1)))(every, torch.ones(2, 2, 4, 1, dtype=torch.float16)),
                           torch.float32)
    want = every.float()
    assert torch.equal(got.isnan(), want.isnan())
    assert torch.equal(got.nan_to_num(0.0), want.nan_to_num(0.0))


def test_window_attention_equals_the_fully_masked_computation():
    g = torch.Generator().manual_seed(3)
    b, hk, groups, t, d = 2, 3, 3, 29, 8
    q = torch.randn(b, t, hk * groups, d, generator=g).transpose(1, 2)
    k = torch.randn(b, t, hk, d, generator=g).transpose(1, 2)
    valid = torch.ones(b, t, dtype=torch.bool)
    valid[1, :7] = False
    pos = (valid.long().cumsum(-1) - 1).clamp_min(0)
    for w in (1, 4, t):
        got = ScoreInputs(q, k, k, valid, pos, 0.3, 0, 1).window_attention(w)
        logits = torch.matmul(q[:, :, -w:], k.repeat_interleave(groups, 1).transpose(-1, -2)) * 0.3
        causal = torch.arange(t)[None, :] <= torch.arange(t - w, t)[:, None]
        want = torch.softmax(logits.masked_fill(~(causal[None, None] & valid[:, None, None, :]), float("-inf")), -1)
        assert torch.equal(got.isnan(), want.isnan()), f"window {w}"  # padding queries that see nothing
        assert torch.equal(got.nan_to_num(-1.0), want.nan_to_num(-1.0)), f"window {w}"


def test_cpu_clock_is_refused_on_cuda_and_unknown_clocks_fail():
    with pytest.raises(KvcheckError, match="cpu clock"):
        _Clock("cuda", "cpu")
    with pytest.raises(KvcheckError, match="unknown clock"):
        _Clock("cpu", "sundial")
    clock = _Clock("cpu", "cpu")
    start = clock.start()
    sum(i * i for i in range(20000))
    assert clock.stop(start) > 0


def test_cpu_peak_memory_sees_a_large_allocation():
    memory = _PeakMemory("cpu")
    memory.start()
    if not memory.ok:
        pytest.skip("no /proc/self/clear_refs on this system")
    before = memory.peak()
    x = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched
    assert memory.peak() - before >= 60 * 2**20
    del x
