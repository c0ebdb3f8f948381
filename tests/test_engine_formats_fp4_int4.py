"""vLLM 0.33's 4-bit KV-cache formats as kvcheck codecs: ``int4_per_token_head`` (randomized Hadamard
transform + asymmetric uint4, zero-point in the scale's low bits), ``nvfp4`` (e2m1 in blocks of 16,
e4m3 block scales, a global scale) and ``nvfp4_4over6`` (per-block choice between amax/6 and amax/4).

What is checked here, on CPU:

- the engine's byte table per token per KV head (keys + values) at head_dim 64 and 128;
- the engine's sign vector (seed ``0x9E3779B9``) bit for bit, the Sylvester butterfly and its
  block-diagonal use, the engine's 4over6 golden block bit for bit;
- golden codes and stored bits derived by hand from the engine's rules (rounding half away from zero
  for int4, ties to even for e2m1, e4m3 scale rounding, the zero-point nibble) — derived from the
  rules, not produced by the engine, which writes these formats on GPU only;
- the codecs' stated error bounds on the property suite's drawn blocks and on adversarial ones
  (clipping, saturation, flushed blocks), and that the bounds are not vacuous;
- the cache runs them on the tiny random Llama and holds exactly the stated bytes.

Codes byte for byte against the engine's own writers need a GPU and vLLM: the ``gpu`` tests below,
which skip otherwise.
"""
from __future__ import annotations

import struct
from unittest import mock

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kvcheck import engine
from kvcheck import formats_fp4 as f4
from kvcheck import quant
from kvcheck import strategies as kst
from kvcheck.cache import CompressedCache
from kvcheck.errors import KvcheckError
from kvcheck.methods.base import REGISTRY
from kvcheck.methods.int4_per_token_head import Int4HeadTensor, Int4PerTokenHead, quantize_rotated, split_scale
from kvcheck.methods.nvfp4 import NVFP4, NVFP4Tensor
from kvcheck.methods.nvfp4_4over6 import NVFP4FourOverSix, block_error
from kvcheck.strategies import CacheShape
from kvcheck.suites import properties_codec

METHODS = {"int4_per_token_head": Int4PerTokenHead(), "nvfp4": NVFP4(), "nvfp4_4over6": NVFP4FourOverSix()}

# vLLM 0.33.0 bytes per token per KV head, keys and values together (bf16 would be 4·D = 256 / 512):
# int4: 2·(D/2 + 4), one float32 scale inline per head (triton_attn.py customize_spec);
# nvfp4 / nvfp4_4over6: 2·(D/2 + D/16) (vllm/utils/torch_utils.py nvfp4_kv_cache_full_dim)
ENGINE_BYTES = {
    ("int4_per_token_head", 64): 72, ("int4_per_token_head", 128): 136,
    ("nvfp4", 64): 72, ("nvfp4", 128): 144,
    ("nvfp4_4over6", 64): 72, ("nvfp4_4over6", 128): 144,
}

# the engine's RHT signs (torch CPU generator seeded 0x9E3779B9), MSB = element 0, 1 = +1
SIGNS_128 = 0xb09acea68dac010136bc22651c2afed6
SIGNS_64 = 0xb09acea68dac0101


def head_dims(method) -> st.SearchStrategy[int]:
    """The head dims the property suite draws for these codecs: ``kst.HEAD_DIMS`` restricted to
    multiples of the method's ``head_dim_multiple`` (nvfp4's 16-channel blocks; the engine refuses
    others), which ``kvcheck.scenarios.head_dims`` does not read."""
    multiple = getattr(method, "head_dim_multiple", 1)
    return st.sampled_from([d for d in kst.HEAD_DIMS if d % multiple == 0])


@pytest.fixture(autouse=True, scope="module")
def _fp4_head_dims():
    with mock.patch.object(properties_codec, "head_dims", head_dims):
        yield


def f32_bits(v: float) -> int:
    return struct.unpack("<I", struct.pack("<f", v))[0]


def stored_bits(scale: torch.Tensor) -> list[int]:
    return [b & 0xFFFFFFFF for b in scale.view(torch.int32).flatten().tolist()]


def one_head(x) -> torch.Tensor:
    """A vector (or rows) as ``[1, 1, n, d]``."""
    t = torch.as_tensor(x, dtype=torch.float32)
    return t.reshape(1, 1, -1, t.shape[-1])


# ---------------------------------------------------------------- bytes


@pytest.mark.parametrize("d", [64, 128])
@pytest.mark.parametrize("name", METHODS)
def test_bytes_per_token_per_head_are_the_engine_table(name, d):
    method = METHODS[name]
    want = ENGINE_BYTES[(name, d)]
    assert method.quantized_nbytes(1, 1, 1, d) == want
    assert method.quantized_nbytes(3, 2, 5, d) == 3 * 2 * 5 * want
    x = torch.randn(1, 1, 1, d)
    held = method.quantize_keys(x, None).nbytes() + method.quantize_values(x, None).nbytes()
    assert held == want  # what the packed tensors really hold
    # residual slots stay full precision: stated bytes of a 10-slot layer with 3 at 2 bytes per element
    m = type(method)(residual=3)
    assert m.stated_nbytes(CacheShape(1, 1, 1, 10, d), [10], 0, 1, 2) == 7 * want + 3 * 2 * d * 2


# ---------------------------------------------------------------- the randomized Hadamard transform


def test_rht_signs_are_the_engines_bit_for_bit():
    assert f4.sign_bits(f4.rht_signs(128)) == SIGNS_128
    assert f4.sign_bits(f4.rht_signs(64)) == SIGNS_64
    assert set(f4.rht_signs(128).tolist()) == {-1.0, 1.0}
    assert torch.equal(f4.rht_signs(32), f4.rht_signs(128)[:32])  # each block size draws a prefix


def sylvester(b: int) -> torch.Tensor:
    h = torch.ones(1, 1)
    while h.shape[0] < b:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return h


@pytest.mark.parametrize("b", [1, 2, 8, 16, 64, 128])
def test_wht_is_the_unnormalised_sylvester_matrix(b):
    assert torch.equal(f4.wht(torch.eye(b)), sylvester(b))  # natural order, column i = H·e_i
    x = torch.randint(-8, 9, (5, b)).float()
    assert torch.equal(f4.wht(f4.wht(x)), b * x)  # H·H = b·I, exact on small integers


@pytest.mark.parametrize("d, b", [(8, 8), (16, 16), (64, 64), (128, 128), (96, 32), (48, 16), (80, 16), (24, 8)])
def test_rht_is_block_diagonal_over_the_largest_power_of_two(d, b):
    assert f4.hadamard_block(d) == b
    s = f4.rht_signs(b)
    x = torch.randint(-8, 9, (3, d)).float()
    blocks = x.view(3, d // b, b)
    want = (blocks * s) @ sylvester(b).T
    assert torch.equal(f4.rht(x), want.reshape(3, d))
    assert torch.equal(f4.rht(f4.rht(x), inverse=True), b * x)
    e = torch.zeros(d)
    e[0] = 1.0
    if d > b:
        e[b] = 1.0  # channel 0 of the second block
    r = f4.rht(e)
    assert torch.equal(r[:b], s[0] * torch.ones(b))  # rotates to a constant block
    if d > b:
        assert torch.equal(r[b:2 * b], s[0] * torch.ones(b)) and not r[2 * b:].any()


# ---------------------------------------------------------------- int4_per_token_head


def test_int4_quantiser_golden_codes_and_stored_bits():
    """scale = (3 − (−1.5))/15 = float32(0.3) = 0x3E99999A; zp = rha(1.5/0.3) = 5; the stored float32
    is 0x3E999990 | 5; codes x/scale + zp = 0, 5, 10, 15."""
    codes, stored = quantize_rotated(torch.tensor([[-1.5, 0.0, 1.5, 3.0]]))
    assert codes.tolist() == [[0, 5, 10, 15]]
    assert f32_bits(0.3) == 0x3E99999A
    assert stored_bits(stored) == [0x3E999995]
    step, zp = split_scale(stored)
    assert zp.tolist() == [[5.0]] and stored_bits(step) == [0x3E999990]


def test_int4_rounds_half_away_from_zero_not_to_even():
    """scale 1, zp 0 (min 0, max 15): ties go away from zero (torch.round would give 2, 0, 2, 4, 14).
    With min −15, max 0: zp = 15, and ties of x + 15 go up, so −2.5 → −2 and −14.5 → −14."""
    codes, stored = quantize_rotated(torch.tensor([[0.0, 15.0, 2.5, 0.5, 1.5, 4.5, 14.5, 7.0]]))
    assert codes.tolist() == [[0, 15, 3, 1, 2, 5, 15, 7]]
    assert stored_bits(stored) == [0x3F800000]
    codes, stored = quantize_rotated(torch.tensor([[-15.0, 0.0, -2.5, -0.5, -1.5, -4.5, -14.5, -7.0]]))
    assert codes.tolist() == [[0, 15, 13, 15, 14, 11, 1, 8]]
    assert stored_bits(stored) == [0x3F80000F]
    step, zp = split_scale(stored)
    assert ((codes.float() - zp) * step).tolist() == [[-15.0, 0.0, -2.0, 0.0, -1.0, -4.0, -14.0, -7.0]]


def test_int4_zero_point_nibble_round_trips_and_half_a_step_holds():
    gen = torch.Generator().manual_seed(1)
    xr = torch.randn(200, 64, generator=gen) * torch.rand(200, 1, generator=gen) * 10
    codes, stored = quantize_rotated(xr)
    lo, hi = xr.amin(-1, keepdim=True), xr.amax(-1, keepdim=True)
    scale = ((hi - lo) / 15).clamp_min(1e-6)
    step, zp = split_scale(stored)
    assert torch.equal(zp, f4.round_half_away(-lo / scale).clamp(0, 15))
    assert torch.equal(step.view(torch.int32), scale.view(torch.int32) & -16)
    assert bool((step <= scale).all()) and bool((scale - step <= scale * 2.0 ** -19).all())
    assert bool(((lo < 0) & (hi > 0)).all())
    err = ((codes.float() - zp) * step - xr).abs()
    assert bool((err <= scale * (0.5 + 2.0 ** -14)).all())
    assert float((err / scale).max()) > 0.45  # half a step is reached, not just bounded


def test_int4_clips_when_the_rotated_head_is_one_signed():
    """zp is clamped to [0, 15]: an all-positive rotated vector gets zp 0, and its entries above 15
    steps clip to the code 15."""
    xr = torch.tensor([[1.0, 2.0, 4.0, 16.0]])  # scale 1, −min/scale = −1 → zp 0
    codes, stored = quantize_rotated(xr)
    step, zp = split_scale(stored)
    assert zp.item() == 0 and step.item() == 1.0
    assert codes.tolist() == [[1, 2, 4, 15]]  # 16 clips to 15: error one full step


@pytest.mark.parametrize("d", [16, 64, 96])
def test_int4_loses_a_key_on_the_first_channel_of_its_hadamard_blocks(d):
    """x = c on channel 0 of every Hadamard block (of b = the largest power of two dividing d), zero
    elsewhere, rotates to the constant c·s_0 (s_0 = +1), so max = min, the scale is the 1e-6 floor,
    zp = 0 and every code clips to 15: x comes back as 15·step ≈ 1.5e-5 on those channels, whatever
    c — and the stated bound says so."""
    method = Int4PerTokenHead()
    b = f4.hadamard_block(d)
    x = torch.zeros(1, 1, 1, d)
    x[..., ::b] = 3.0
    packed = method.quantize_keys(x, None)
    step, zp = split_scale(packed.scale)
    assert stored_bits(step) == [f32_bits(1e-6) & ~0xF] and zp.item() == 0
    assert quant.unpack(packed.codes, 4).unique().tolist() == [15]
    back = method.dequantize(packed, torch.float32)
    want = torch.zeros(d)
    want[::b] = 15 * step.item()
    assert torch.allclose(back.flatten(), want, rtol=0, atol=1e-9)
    assert bool(((back - x).abs() <= packed.error_bound(x)).all())
    assert bool((packed.error_bound(x)[..., ::b] >= 3.0 - 15 * step.item()).all())


def test_int4_rotates_then_rounds_to_the_input_dtype():
    """``single_rht(key.float()).to(key.dtype)``: a bf16 key is quantised from bf16 rotated values."""
    gen = torch.Generator().manual_seed(2)
    x = (torch.randn(2, 2, 3, 64, generator=gen) * 4).to(torch.bfloat16)
    packed = Int4PerTokenHead().quantize(x)
    codes, stored = quantize_rotated(f4.rht(x.float()).to(torch.bfloat16).float())
    assert torch.equal(quant.unpack(packed.codes, 4), codes) and torch.equal(packed.scale, stored)
    plain, _ = quantize_rotated(f4.rht(x.float()))
    assert not torch.equal(plain, codes)  # the rounding to bf16 matters for some codes


def test_int4_nibbles_are_low_first():
    codes = torch.tensor([[1, 2, 15, 0]], dtype=torch.uint8)
    assert quant.pack(codes, 4).tolist() == [[0x21, 0x0F]]


# ---------------------------------------------------------------- e2m1 and e4m3


def test_e2m1_rounds_to_nearest_ties_to_even_and_saturates():
    v = torch.tensor([0.0, 0.25, 0.2500001, 0.75, 0.7499999, 1.25, 1.2500001, 1.75, 2.5, 2.5000002, 3.5, 5.0,
                      5.0000005, 6.0, 7.0, 1e30, -0.1, -0.25, -0.26, -3.5, -100.0])
    want = [0.0, 0.0, 0.5, 1.0, 0.5, 1.0, 1.5, 2.0, 2.0, 3.0, 4.0, 4.0, 6.0, 6.0, 6.0, 6.0, -0.0, -0.0, -0.5, -4.0,
            -6.0]
    assert f4.e2m1_round(v).tolist() == want
    codes = f4.e2m1_encode(v)
    assert codes.tolist() == [0, 0, 1, 2, 1, 2, 3, 4, 4, 5, 6, 6, 7, 7, 7, 7, 8, 8, 9, 14, 15]
    assert f4.e2m1_decode(torch.arange(16, dtype=torch.uint8)).tolist() == [
        0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0]


def test_e4m3_block_scale_rounding():
    """SF = e4m3(amax·(1/6)): 6 → 1.0 (0x38), 9 → 1.5 (0x3C), 1 → 0.171875 (0x23, nearer than 0.15625),
    96 → 16 (0x58), ≥ 2688·(1+2⁻⁴) → 448 (0x7E, saturated), 3·2⁻⁹ → 2⁻¹⁰ rounds to even 0, 9·2⁻⁹ → 1.5·2⁻⁹
    → 2·2⁻⁹ (0x02, ties to even on the subnormals)."""
    amax = torch.tensor([6.0, 9.0, 1.0, 96.0, 1e4, 3 * 2.0 ** -9, 9 * 2.0 ** -9])
    sf, out = f4.nvfp4_scale(amax, 6.0, 1.0)
    assert sf.view(torch.uint8).tolist() == [0x38, 0x3C, 0x23, 0x58, 0x7E, 0x00, 0x02]
    assert out[5].item() == 0.0 and out[0].item() == 1.0
    assert out[4].item() == float(torch.tensor(1 / 448, dtype=torch.float32))


# ---------------------------------------------------------------- nvfp4 / nvfp4_4over6


def test_4over6_golden_block_bit_for_bit():
    """The engine's test block ``[6] + [4.5]·15`` (bf16, k_scale 1, repeated over head_dim 64): nvfp4
    keeps SF = 1 (0x38), codes 6 → 0x7, 4.5 → 4 (0x6), bytes 0x67 0x66…; 4over6 picks SF = 1.5 (0x3C),
    codes 4 (0x6) and 3 (0x5), bytes 0x56 0x55…, an exact round trip — lower error, as the engine's
    test asserts."""
    src = torch.tensor([6.0] + [4.5] * 15, dtype=torch.bfloat16).repeat(4).reshape(1, 1, 1, 64)
    plain, four = NVFP4().quantize(src), NVFP4FourOverSix().quantize(src)
    assert plain.codes.flatten().tolist() == ([0x67] + [0x66] * 7) * 4
    assert plain.scale.view(torch.uint8).flatten().tolist() == [0x38] * 4
    assert four.codes.flatten().tolist() == ([0x56] + [0x55] * 7) * 4
    assert four.scale.view(torch.uint8).flatten().tolist() == [0x3C] * 4
    back_plain = NVFP4().dequantize(plain, torch.float32).flatten()
    back_four = NVFP4FourOverSix().dequantize(four, torch.float32).flatten()
    assert back_plain.tolist() == ([6.0] + [4.0] * 15) * 4
    assert torch.equal(back_four, src.float().flatten())
    x = src.float().flatten()
    assert (back_four - x).square().mean() < (back_plain - x).square().mean()


def test_4over6_chooses_by_strictly_lower_squared_error():
    """Golden block, then ``[6]·16`` (both candidates exact: the tie keeps SF6 = 1, 0x38), then
    ``[1]·16`` (SF6 = 0.171875 gives 1.03125, SF4 = 0.25 (0x28) is exact: SF4)."""
    g = torch.tensor([[6.0] + [4.5] * 15, [6.0] * 16, [1.0] * 16])
    amax = g.abs().amax(-1)
    _, out6 = f4.nvfp4_scale(amax, 6.0, 1.0)
    _, out4 = f4.nvfp4_scale(amax, 4.0, 1.0)
    e6, e4 = block_error(g, out6[:, None]), block_error(g, out4[:, None])
    assert e6[0].item() == 15 * 0.25 and e4[0].item() == 0.0
    assert e6[1].item() == 0.0 == e4[1].item()  # a tie keeps SF6
    sf, _ = NVFP4FourOverSix().block_scales(g[:, None, :])
    assert sf.view(torch.uint8).flatten().tolist() == [0x3C, 0x38, 0x28]
    assert e6[2].item() == 16 * 0.03125 ** 2 and e4[2].item() == 0.0


def test_nvfp4_blocks_are_16_channels():
    """An outlier in channel 16 scales the second block only: block 0 keeps SF = e4m3(1/6) = 0.171875
    (0x23) and comes back 1.03125 throughout; block 1 (SF 16, 0x58) flushes its ones to zero."""
    x = one_head([1.0] * 16 + [96.0] + [1.0] * 15)
    packed = NVFP4().quantize(x)
    assert packed.scale.view(torch.uint8).flatten().tolist() == [0x23, 0x58]
    assert packed.codes.flatten().tolist() == [0x77] * 8 + [0x07] + [0x00] * 7
    back = NVFP4().dequantize(packed, torch.float32).flatten()
    assert back.tolist() == [1.03125] * 16 + [96.0] + [0.0] * 15


def test_nvfp4_global_scale_scales_the_block_scales():
    """SFScale = 1/kv_scale: with kv_scale 2 the same block stores SF halved and dequantises to the same
    values (SF·kv_scale)."""
    x = one_head([6.0] + [4.5] * 15)
    one, two = NVFP4().quantize(x), NVFP4(kv_scale=2.0).quantize(x)
    assert one.scale.float().tolist() == [[[[1.0]]]] and two.scale.float().tolist() == [[[[0.5]]]]
    assert torch.equal(one.codes, two.codes)
    assert torch.equal(NVFP4().dequantize(one, torch.float32), NVFP4(kv_scale=2.0).dequantize(two, torch.float32))
    big = one_head([1e4] + [0.0] * 15)
    # kv_scale 1: SF saturates at 448, so 1e4 clips to 6·448; kv_scale 4: SF = e4m3(1e4/24) = 416, and
    # 1e4/(416·4) = 6.01 rounds to 6: 6·416·4
    for method, want in ((NVFP4(), 2688.0), (NVFP4(kv_scale=4.0), 9984.0)):
        assert method.dequantize(method.quantize(big), torch.float32).flatten()[0].item() == want


def test_nvfp4_requantising_its_output_can_flush_a_subnormal_scale_block():
    """A block whose amax is 3.06·2⁻⁹: SF = e4m3(0.51·2⁻⁹) = 2⁻⁹ (subnormal), the amax comes back 3·2⁻⁹,
    whose SF′ = e4m3(0.5·2⁻⁹) rounds to even, 0: the second round trip flushes the block to zero."""
    x = one_head([3.06 * 2.0 ** -9] + [0.0] * 15)
    method = NVFP4()
    y = method.dequantize(method.quantize(x), torch.float32)
    assert y.flatten()[0].item() == 3 * 2.0 ** -9
    assert not method.dequantize(method.quantize(y), torch.float32).any()


# ---------------------------------------------------------------- error bounds


def adversarial(d: int) -> torch.Tensor:
    """Rows ``[1, 1, n, d]`` that hit the formats' edges: zeros, one-hot on channel 0 (int4's constant
    rotation), one-hot elsewhere, constant, all positive, alternating signs, ±1e4 (beyond nvfp4's
    6·448), subnormal scales, e2m1 ties, lone outliers."""
    rows = [torch.zeros(d), torch.eye(d)[0] * 5, torch.eye(d)[d // 2 + 1] * -7, torch.full((d,), 3.0),
            torch.arange(1.0, d + 1), (-1.0) ** torch.arange(d) * 2, torch.full((d,), 1e4),
            (-1.0) ** torch.arange(d) * 1e4, torch.full((d,), 3e-3), torch.linspace(-1e-5, 1e-5, d),
            torch.tensor([6.0, 0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0] * (d // 8)),
            torch.cat([torch.tensor([1e3]), torch.full((d - 1,), 1e-3)])]
    return torch.stack(rows).reshape(1, 1, len(rows), d)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("d", [16, 64, 128])
@pytest.mark.parametrize("name", METHODS)
def test_error_bound_holds_on_adversarial_heads(name, d, dtype):
    method = METHODS[name]
    x = adversarial(d).to(dtype)
    gen = torch.Generator().manual_seed(d)
    x = torch.cat([x, (torch.randn(1, 1, 20, d, generator=gen) * 3).to(dtype)], dim=2)
    for encode in (method.quantize_keys, method.quantize_values):
        packed = encode(x, None)
        err = (method.dequantize(packed, torch.float32) - x.float()).abs()
        bound = packed.error_bound(x)
        assert bound.shape == x.shape and bool((err <= bound).all()), float((err - bound).max())


@pytest.mark.parametrize("name", METHODS)
def test_error_bound_is_not_vacuous(name):
    """On Gaussian heads the worst entry comes close to the bound (nvfp4: a full half-gap; int4: the
    bound is the block's mean half-step, which single entries approach less), and the bound is at most
    about half a step (int4: the rotated step; nvfp4: one e2m1 unit)."""
    method = METHODS[name]
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 2, 64, 64, generator=gen) * 2
    packed = method.quantize_keys(x, None)
    err = (method.dequantize(packed, torch.float32) - x).abs()
    bound = packed.error_bound(x)
    ratio = float((err / bound).max())
    if isinstance(packed, Int4HeadTensor):
        step, _ = split_scale(packed.scale)
        assert ratio > 0.15 and bool((bound <= step * 0.51).all())
    else:
        assert ratio > 0.9 and bool((bound <= packed.unit().repeat_interleave(16, -1).flatten(-2) * 1.001).all())


@pytest.mark.parametrize("name", METHODS)
def test_property_suite_round_trip_bound(name):
    """The property suite's own check (``kvcheck.suites.properties_codec``), drawn blocks up to ±1e4 with
    left padding, outlier channels or element-wise fills, at the head dims the method accepts (see
    :func:`head_dims`)."""
    properties_codec.test_round_trip_error_within_the_analytic_bound(kv_method=METHODS[name])


@settings(max_examples=60, deadline=None)
@given(data=st.data(), name=st.sampled_from(["nvfp4", "nvfp4_4over6"]), kv_scale=st.sampled_from([1.0, 0.25, 3.0]))
def test_nvfp4_output_is_a_fixed_point_on_normal_scales(data, name, kv_scale):
    """y = dq(q(x)) quantises back to itself bit for bit on every block whose stored scale is a normal
    e4m3 (≥ 2⁻⁶): its amax sits on the code 6 (4over6: on 4, or a grid both candidates reproduce), so SF
    re-derives exactly; nvfp4 keeps its scale bytes too. Subnormal-scale blocks may not (see the flush
    test) but stay within the bound."""
    method = type(METHODS[name])(kv_scale=kv_scale)
    x, valid = data.draw(properties_codec.codec_inputs(method))
    packed = method.quantize_keys(x, valid)
    y = method.dequantize(packed, torch.float32)
    again = method.quantize_keys(y, valid)
    y2 = method.dequantize(again, torch.float32)
    normal = packed.exact_requantization()
    assert torch.equal(normal, (packed.scale.float() >= 2.0 ** -6).repeat_interleave(16, dim=-1))
    assert torch.equal(y2[normal], y[normal])
    if name == "nvfp4":
        blocks = normal[..., ::16]
        assert torch.equal(again.scale.view(torch.uint8)[blocks], packed.scale.view(torch.uint8)[blocks])
    assert bool(((y2 - y).abs() <= again.error_bound(y)).all())


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_int4_requantised_output_stays_within_the_bound(data):
    """int4 has no exact fixed point (the re-rotated output is off the stored grid by float32 rounding,
    and the outermost codes need not be 0 and 15), but re-quantising y = dq(q(x)) stays within y's own
    stated bound."""
    method = METHODS["int4_per_token_head"]
    x, valid = data.draw(properties_codec.codec_inputs(method))
    packed = method.quantize_keys(x, valid)
    assert packed.exact_requantization().shape == x.shape and not packed.exact_requantization().any()
    y = method.dequantize(packed, torch.float32)
    again = method.quantize_keys(y, valid)
    assert bool(((method.dequantize(again, torch.float32) - y).abs() <= again.error_bound(y)).all())


# ---------------------------------------------------------------- through kvcheck's cache

LAYERS, KV_HEADS = 3, 2
PROMPT = [(7 * i + 3) % 127 + 1 for i in range(45)]


@torch.inference_mode()
def run_cache(lm, method, prompts, steps: int):
    """Prefill ``prompts`` (left-padded), then greedy-decode ``steps`` tokens; yields the cache after
    prefill and after each step, with the logits."""
    n_layers = lm.model.config.num_hidden_layers
    ids, valid = engine.left_pad(prompts, lm.tokenizer.pad_token_id, lm.device)
    positions = (valid.long().cumsum(-1) - 1).clamp_min(0)
    cache = CompressedCache(method, n_layers)
    logits = engine.forward(lm.model, ids, positions, valid, cache)
    yield cache, logits
    for step in range(steps):
        pos = (valid.sum(-1) + step)[:, None]
        nxt = logits[:, -1].argmax(-1)[:, None]
        logits = engine.forward(lm.model, nxt, pos, torch.ones_like(pos, dtype=torch.bool), cache)
        yield cache, logits


@pytest.mark.parametrize("residual", [0, 5])
@pytest.mark.parametrize("name", METHODS)
def test_runs_through_the_cache_and_holds_the_stated_bytes(tiny_lm, name, residual):
    method = type(METHODS[name])(residual=residual)
    cfg = tiny_lm.model.config
    d = cfg.hidden_size // cfg.num_attention_heads
    assert (cfg.num_hidden_layers, cfg.num_key_value_heads, d) == (LAYERS, KV_HEADS, 16)
    per_token = method.quantized_nbytes(1, 1, 1, d)  # keys + values of one token and head
    assert per_token == {"int4_per_token_head": 2 * (8 + 4), "nvfp4": 2 * (8 + 1), "nvfp4_4over6": 2 * (8 + 1)}[name]
    n = len(PROMPT)
    for steps, (cache, logits) in enumerate(run_cache(tiny_lm, method, [PROMPT], steps=3)):
        held = n + steps
        res = min(residual, held)
        assert cache.kv_bytes(float_bytes=2) == LAYERS * KV_HEADS * ((held - res) * per_token + res * 2 * d * 2)
        assert [c.tolist() for c in cache.kept_counts()] == [[[held] * KV_HEADS]] * LAYERS
        assert bool(torch.isfinite(logits).all())
        if steps == 0:
            shape = CacheShape(1, KV_HEADS, 2, n, d)
            assert all(layer.nbytes(2) == method.stated_nbytes(shape, [n], i, LAYERS, 2)
                       for i, layer in enumerate(cache.layers))
    layer = cache.layers[0]
    assert isinstance(layer.qk, (Int4HeadTensor, NVFP4Tensor)) and layer.qk.codes.dtype == torch.uint8


@pytest.mark.parametrize("name", METHODS)
def test_head_dim_64_holds_the_engine_bytes(tiny_lm_d64, name):
    method = METHODS[name]
    cache, _ = next(run_cache(tiny_lm_d64, method, [PROMPT], steps=0))
    layers = tiny_lm_d64.model.config.num_hidden_layers
    assert cache.kv_bytes(float_bytes=2) == layers * 1 * len(PROMPT) * ENGINE_BYTES[(name, 64)]


@pytest.mark.parametrize("name", METHODS)
def test_cache_runs_are_deterministic_and_quantised(tiny_lm, name):
    method = METHODS[name]
    a = [logits for _, logits in run_cache(tiny_lm, method, [PROMPT, PROMPT[:30]], steps=2)]
    b = [logits for _, logits in run_cache(tiny_lm, method, [PROMPT, PROMPT[:30]], steps=2)]
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    from kvcheck.methods.full import Full
    full = [logits for _, logits in run_cache(tiny_lm, Full(), [PROMPT, PROMPT[:30]], steps=2)]
    assert not torch.equal(a[-1], full[-1])  # decoding read dequantised keys and values


# ---------------------------------------------------------------- declaration


def test_registered_with_engine_settings_and_ids():
    for name, cls in [("int4_per_token_head", Int4PerTokenHead), ("nvfp4", NVFP4), ("nvfp4_4over6", NVFP4FourOverSix)]:
        assert REGISTRY[name] is cls and cls.engine == f"vLLM --kv-cache-dtype {name}"
        assert cls.block == 1 and cls().residual == 0
    assert Int4PerTokenHead().id == "int4_per_token_head-res0"
    assert NVFP4().id == "nvfp4-res0-kvs1.0" and NVFP4FourOverSix(kv_scale=0.5).id == "nvfp4_4over6-res0-kvs0.5"


@pytest.mark.parametrize("make", [
    lambda: Int4PerTokenHead(residual=-1), lambda: Int4PerTokenHead(residual=1.5), lambda: NVFP4(residual=-2),
    lambda: NVFP4(kv_scale=0.0), lambda: NVFP4(kv_scale=-1.0), lambda: NVFP4(kv_scale=float("nan")),
    lambda: NVFP4(kv_scale=float("inf")), lambda: NVFP4FourOverSix(kv_scale=True), lambda: NVFP4(kv_scale="1")])
def test_bad_configurations_are_refused(make):
    with pytest.raises(KvcheckError):
        make()


@pytest.mark.parametrize("name, d", [("nvfp4", 8), ("nvfp4", 24), ("nvfp4_4over6", 40), ("int4_per_token_head", 7)])
def test_head_dims_the_engine_refuses_are_refused(name, d):
    with pytest.raises(KvcheckError, match="head_dim"):
        METHODS[name].quantize_keys(torch.zeros(1, 1, 2, d), None)


# ---------------------------------------------------------------- against the engine (GPU + vLLM)


@pytest.mark.gpu
def test_int4_codes_match_the_engines_writer(monkeypatch):
    """The engine's Triton writer fed kvcheck's rotation (its CPU butterfly) writes kvcheck's codes and
    stored scales bit for bit; its own CUDA rotation (hadacore, bf16) agrees with kvcheck's within bf16
    rounding."""
    ops = pytest.importorskip("vllm.v1.attention.ops.int4_per_token_head", reason="vLLM is not installed")
    dev = torch.device("cuda")
    gen = torch.Generator().manual_seed(0)
    t, h, d = 32, 4, 128
    key = (torch.randn(t, h, d, generator=gen) * 2).to(torch.bfloat16)
    value = (torch.randn(t, h, d, generator=gen) * 0.5).to(torch.bfloat16)
    caches = [torch.zeros(1, t, h, d // 2, dtype=torch.uint8, device=dev) for _ in range(2)]
    scales = [torch.zeros(1, t, h, dtype=torch.float32, device=dev) for _ in range(2)]
    engine_rht = ops.single_rht
    monkeypatch.setattr(ops, "single_rht", lambda x, inverse=False: f4.rht(x.cpu(), inverse).to(x.device))
    ops.reshape_and_cache_int4(key.to(dev), value.to(dev), caches[0], caches[1], torch.arange(t, device=dev),
                               k_scale_cache=scales[0], v_scale_cache=scales[1])
    method = Int4PerTokenHead()
    for src, codes, scale in zip((key, value), caches, scales):
        want = method.quantize(src.permute(1, 0, 2)[None])  # [1, heads, tokens, d]
        assert torch.equal(codes[0].permute(1, 0, 2).cpu(), want.codes[0])
        assert torch.equal(scale[0].T.cpu().view(torch.int32), want.scale[0, ..., 0].view(torch.int32))
    got = engine_rht(key.to(dev).float()).cpu()
    ref = f4.rht(key.float())
    torch.testing.assert_close(got, ref, rtol=2.0 ** -7, atol=2.0 ** -7 * float(ref.abs().max()))


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["nvfp4", "nvfp4_4over6"])
def test_nvfp4_codes_match_the_sm100_writer(name):
    """The engine's SM100 writer (``reshape_and_cache_flash``) stores kvcheck's key codes and key block
    scales bit for bit, and its value codes (value scales are swizzled; not compared)."""
    custom = pytest.importorskip("vllm._custom_ops", reason="vLLM is not installed")
    torch_utils = pytest.importorskip("vllm.utils.torch_utils", reason="vLLM is not installed")
    if torch.cuda.get_device_capability() < (10, 0):
        pytest.skip("kvcheck mirrors the SM100 NVFP4 writer; SM 8.x/9.x/12.x write through FlashInfer")
    dev = torch.device("cuda")
    gen = torch.Generator().manual_seed(0)
    t, h, d = 16, 2, 128
    key = (torch.randn(t, h, d, generator=gen) * 2).to(torch.bfloat16)
    value = (torch.randn(t, h, d, generator=gen) * 0.5).to(torch.bfloat16)
    kv = torch.zeros(1, 2, t, h, d // 2 + d // 16, dtype=torch.uint8, device=dev)
    one = torch.ones(1, dtype=torch.float32, device=dev)
    custom.reshape_and_cache_flash(key.to(dev), value.to(dev), kv[:, 0], kv[:, 1], torch.arange(t, device=dev),
                                   name, one, one)
    method = METHODS[name]
    for side, src in enumerate((key, value)):
        data, scale = torch_utils.nvfp4_split_data_scale(kv[:, side])  # [1, tokens, heads, ·] (NHD)
        want = method.quantize(src.permute(1, 0, 2)[None])
        assert torch.equal(data[0].permute(1, 0, 2).cpu(), want.codes[0])
        if side == 0:
            assert torch.equal(scale[0].permute(1, 0, 2).cpu().view(torch.uint8), want.scale[0].view(torch.uint8))
