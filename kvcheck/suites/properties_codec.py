"""Properties of every declared quantisation method's codec (quantise → dequantise), checked by
hypothesis on drawn key/value blocks: left-padded, up to ±1e4, dense with outlier channels or drawn
element-wise (mostly one value, a few others: constant groups, lone extremes). Methods without a codec
are skipped with the reason."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from kvcheck import oracles, quant
from kvcheck import strategies as kst
from kvcheck.methods import QuantMethod
from kvcheck.methods.fp8 import FP8Tensor
from kvcheck.scenarios import head_dims
from kvcheck.strategies import profile_share as share

pytestmark = pytest.mark.usefixtures("one_thread")


def _needs_codec(method) -> None:
    if not isinstance(method, QuantMethod):
        pytest.skip(f"{method.name} keeps its tokens exact: it has no quantisation codec to round-trip")


@st.composite
def codec_inputs(draw, method):
    """(x ``[b, kv_heads, n, d]`` up to ±1e4, valid ``[b, n]`` left padding): x dense with outlier
    channels, or (up to 4096 entries) drawn element-wise."""
    shape = draw(kst.cache_shapes(seq=st.integers(1, 40), head_dim=head_dims(method)))
    tensors = kst.kv_tensors(shape.kv())
    if math.prod(shape.kv()) <= 4096:
        tensors = st.one_of(tensors, kst.array_tensors(shape.kv()))
    x = draw(tensors)
    valid, _ = kst.left_padding(draw(kst.padded_lengths(shape.batch, shape.seq)), shape.seq)
    return x, valid


def _codecs(method):
    return (("keys", method.quantize_keys), ("values", method.quantize_values))


def _over(name: str, what: str, x, back, bound, real) -> None:
    err = (back.double() - x.double()).abs()
    over = (err > bound) & real
    if bool(over.any()):
        i = int(((err - bound) * over).flatten().argmax())
        raise AssertionError(f"{name}: {int(over.sum())} of {int(real.sum())} real entries over {what}; worst: "
                             f"x = {float(x.flatten()[i]):.6g} came back {float(back.flatten()[i]):.6g}, "
                             f"|error| {float(err.flatten()[i]):.4g} > bound {float(bound.flatten()[i]):.4g}")


@share(2.0)
@given(data=st.data())
def test_round_trip_error_within_the_analytic_bound(kv_method, data):
    """Every real entry comes back within two bounds: the one its grid states from the data's own range
    and the method's documented bits and group (``oracles.stated_round_trip_bound``: half the step
    (hi − lo)/(2^bits − 1) of its group for integer codecs, half an e4m3 ulp for fp8, with float16 and
    float32 rounding), never from the codec's stored scales, so a grid coarser than stated fails; and
    the one the packed tensor states (``oracles.round_trip_bound``), for codecs kvcheck documents no
    grid for."""
    _needs_codec(kv_method)
    x, valid = data.draw(codec_inputs(kv_method))
    real = valid[:, None, :, None].expand_as(x)
    for name, encode in _codecs(kv_method):
        packed = encode(x, valid)
        stated = oracles.stated_round_trip_bound(kv_method, x, valid, name)
        bound = oracles.round_trip_bound(packed, x)
        if bound is None and stated is None:
            pytest.skip(f"{kv_method.name}: kvcheck.oracles knows no bound for {type(packed).__name__}")
        back = kv_method.dequantize(packed, torch.float32)
        if stated is not None:
            _over(name, "the bound its documented grid gives on the data's range", x, back, stated, real)
        if bound is not None:
            _over(name, "the bound its packed tensor states", x, back, bound, real)


@share(2.0)
@given(data=st.data())
def test_dequantized_output_is_a_fixed_point(kv_method, data):
    """What holds exactly when the codec meets its own output y = dq(q(x)):

    - integer codecs: ``y == codes·scale + zero`` bit for bit, and rounding y back onto the stored
      grid returns the stored codes, ``round((y − zero)/scale) == codes``, for every real entry where
      float32 resolves the grid (``|y| + |zero| ≤ 2²¹·scale``). Re-quantising y through the API
      re-derives the grid (zero′ = min y rounded down to fp16, scale′ = the step rounded up to fp16),
      which can be finer, or one fp16 ulp coarser, than the stored one, so ``dq(q(y)) == y`` is not
      exact; what holds is ``zero′ ≥ zero``, ``scale′ ≤ nextafter_fp16(scale, +inf)`` and
      ``|dq(q(y)) − y| ≤ oracles.round_trip_bound``.
    - fp8: ``dq(q(y)) == y`` bit for bit, with the same scales (y's absmax sits on the code 448).
    - a packed tensor that states ``fixed_point = True`` (the engines' formats): ``dq(q(y)) == y`` bit for
      bit; one that states ``exact_requantization()`` (nvfp4: blocks with a normal scale): bit for bit
      there, and within its stated bound everywhere.
    """
    _needs_codec(kv_method)
    x, valid = data.draw(codec_inputs(kv_method))
    real = valid[:, None, :, None].expand_as(x)
    for name, encode in _codecs(kv_method):
        packed = encode(x, valid)
        y = kv_method.dequantize(packed, torch.float32)
        again = encode(y, valid)
        y2 = kv_method.dequantize(again, torch.float32)
        if getattr(packed, "fixed_point", False):  # the format states dq(q(y)) == y exactly
            assert torch.equal(y2, y), f"{name}: dq(q(y)) != y"
            continue
        exact = getattr(packed, "exact_requantization", None)
        if exact is not None:  # the format states, per entry, where dq(q(y)) == y exactly
            mask = exact() & real
            assert torch.equal(y2[mask], y[mask]), f"{name}: dq(q(y)) != y where the format states it exact"
            over = ((y2 - y).abs() > oracles.round_trip_bound(again, y)) & real
            assert not bool(over.any()), f"{name}: dq(q(y)) off y by more than the bound"
            continue
        if isinstance(packed, FP8Tensor):
            assert torch.equal(again.scale, packed.scale), f"{name}: re-quantising changed the scales"
            assert torch.equal(y2, y), f"{name}: dq(q(y)) != y"
            continue
        if not isinstance(packed, quant.QTensor):
            pytest.skip(f"{kv_method.name}: kvcheck.oracles knows no grid for {type(packed).__name__}")
        scale, zero = oracles.per_entry(packed.scale, packed), oracles.per_entry(packed.zero, packed)
        codes = quant.unpack(packed.codes, packed.bits).float()
        assert torch.equal(codes * scale + zero, y), f"{name}: y is not codes·scale + zero"
        resolved = real & (y.abs() + zero.abs() <= 2.0 ** 21 * scale)
        projected = ((y - zero) / scale).round()
        assert torch.equal(projected[resolved], codes[resolved]), f"{name}: y does not round back to its codes"
        up = torch.nextafter(packed.scale, torch.full_like(packed.scale, float("inf")))
        assert bool((again.scale.float() <= up.float()).all()), f"{name}: re-derived step coarser than one fp16 ulp"
        assert bool((again.zero.float() >= packed.zero.float()).all()), f"{name}: re-derived zero below the stored one"
        over = ((y2 - y).abs() > oracles.round_trip_bound(again, y)) & real
        assert not bool(over.any()), f"{name}: dq(q(y)) off y by more than the bound"
