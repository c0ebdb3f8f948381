"""The engines' KV-cache formats as kvcheck codecs: vLLM 0.33's ``fp8`` (per tensor),
``int8_per_token_head`` and ``fp8_per_token_head``, SGLang 0.5.23's ``mxfp8`` and ``fp4_mx_block16``.

Checked here, on the CPU: the engines' byte tables per token per KV head (head_dim 64 and 128), the
specification's golden vectors bit for bit (vLLM's int8 per-token-head case, and the tie vector that
pins round-half-away), goldens derived by hand from each stated rule (e4m3 ties to even, e2m1 ties
up, UE8M0 exponents), the stored scales against the rule recomputed in float64, each packed tensor's
``error_bound`` on random and adversarial data (and that a grid one step coarser breaks it), the
fixed point dq(q(y)) == y, and a run through kvcheck's cache on the tiny random model holding
exactly the stated bytes.

Against the engines themselves: vLLM's per-token-head and per-tensor writers are Triton kernels, so
those comparisons are ``gpu`` tests (skipped without CUDA or vLLM); SGLang's fp4_mx_block16 writer is
pure PyTorch and is compared on the CPU where SGLang is installed. SGLang's mxfp8 writer was not
read, so nothing compares with it.
"""
from __future__ import annotations

import inspect

import pytest
import torch

from kvcheck import engine, formats
from kvcheck.cache import CompressedCache
from kvcheck.errors import KvcheckError
from kvcheck.methods.base import REGISTRY
from kvcheck.methods.fp4_mx_block16 import FP4MXBlock16
from kvcheck.methods.fp8_per_token_head import FP8PerTokenHead
from kvcheck.methods.int8_per_token_head import Int8PerTokenHead
from kvcheck.methods.mxfp8 import MXFP8
from kvcheck.methods.vllm_fp8 import VllmFP8
from kvcheck.strategies import CacheShape

METHODS = {
    "vllm_fp8": VllmFP8(),
    "int8_per_token_head": Int8PerTokenHead(),
    "fp8_per_token_head": FP8PerTokenHead(),
    "mxfp8": MXFP8(),
    "fp4_mx_block16": FP4MXBlock16(),
}
# Bytes per token per KV head, keys + values, as the engines state them (vLLM 0.33's table; SGLang's
# D + D/32 per side for mxfp8, D/2 + D/16 for fp4_mx_block16). vllm_fp8 also holds two float32
# per-tensor scales per layer, counted apart (PER_LAYER).
ENGINE_BYTES = {
    "vllm_fp8": {64: 128, 128: 256},
    "int8_per_token_head": {64: 136, 128: 264},
    "fp8_per_token_head": {64: 136, 128: 264},
    "mxfp8": {64: 132, 128: 264},
    "fp4_mx_block16": {64: 72, 128: 144},
}
PER_LAYER = {"vllm_fp8": 8}
ENGINES = {
    "vllm_fp8": "vLLM --kv-cache-dtype fp8",
    "int8_per_token_head": "vLLM --kv-cache-dtype int8_per_token_head",
    "fp8_per_token_head": "vLLM --kv-cache-dtype fp8_per_token_head",
    "mxfp8": "SGLang --kv-cache-dtype mxfp8",
    "fp4_mx_block16": "SGLang --kv-cache-dtype fp4_mx_block16",
}
# vLLM's golden int8 case (tests/quantization/test_per_token_kv_cache.py), bf16, and the tie vector
TIES = [127.0, 2.5, -2.5, 0.5, -0.5, 1.5]
TIES_ROUND_HALF_AWAY = [127, 3, -3, 1, -1, 2]
TIES_TORCH_ROUND = [127, 2, -2, 0, 0, 2]
# e2m1 ties (and values either side) in one block of 16 whose absmax is 6, so the scale is 2^0
FP4_BLOCK = [6.0, 5.0, 4.99, 3.5, 3.49, 2.5, 2.49, 1.75, 1.74, 1.25, 1.24, 0.75, 0.74, 0.25, 0.24, -5.0]


def row(values, d: int = 64) -> torch.Tensor:
    """One (token, head) vector ``[1, 1, 1, d]``: ``values`` then zeros."""
    x = torch.zeros(1, 1, 1, d)
    x[..., :len(values)] = torch.tensor(values, dtype=torch.float32)
    return x


def random_kv(seed: int = 0, shape=(2, 3, 7, 64)) -> torch.Tensor:
    """Normal entries, each (token, head) at its own power-of-two magnitude (2⁻¹² … 2¹²)."""
    g = torch.Generator().manual_seed(seed)
    spread = torch.exp2(torch.randint(-12, 13, (*shape[:3], 1), generator=g).float())
    return torch.randn(*shape, generator=g) * spread


def adversarial_kv(name: str) -> torch.Tensor:
    """One row per hard case ``[1, 1, rows, 64]``: exact ties of the method's grid at a known scale,
    zeros, a lone outlier over tiny entries, ±1e4 and ±1e30, float32 subnormals, a constant row."""
    e4m3_ties = [448.0, 1.0625, 1.1875, 2.0 ** -10, -3 * 2.0 ** -10, 17.0, -232.0, 440.0, 0.3, -0.3]
    ties = {"int8_per_token_head": [127.0] + [k + 0.5 for k in range(-6, 6)],
            "fp4_mx_block16": FP4_BLOCK}.get(name, e4m3_ties)
    rows = [ties, [0.0], [1e4] + [1e-3, -7e-4] * 20, [-1e4, 1e4, 3.0], [1e30, -1e30, 1.0],
            [1e-40, -3e-39, 2e-45], [0.7] * 64, [-2.0 ** -20] * 64]
    return torch.cat([row(r) for r in rows], dim=2)


def both_codecs(method, x):
    return [method.quantize_keys(x, None), method.quantize_values(x, None)]


def engine_scale(name: str, x: torch.Tensor) -> torch.Tensor:
    """The scale each entry of ``x`` gets by the stated rule, recomputed in float64 (exact at powers of
    two): per (token, head) for the per-token-head formats, per block of 32 / 16 channels for mxfp8 /
    fp4_mx_block16, the configured 1.0 for vllm_fp8."""
    xd = x.double()
    if name == "vllm_fp8":
        return torch.ones_like(xd)
    if name in ("int8_per_token_head", "fp8_per_token_head"):
        qmax = 127.0 if name.startswith("int8") else 448.0
        return (xd.abs().amax(-1, keepdim=True) / qmax).clamp_min(1e-6).expand_as(xd)
    g, emax = (32, 448.0) if name == "mxfp8" else (16, 6.0)
    amax = xd.unflatten(-1, (-1, g)).abs().amax(-1, keepdim=True)
    v = amax / emax if name == "mxfp8" else (amax / emax).clamp_min(1e-10)
    e = torch.log2(v).ceil().clamp(-127, 127)
    return torch.exp2(e).expand(*e.shape[:-1], g).flatten(-2)


def coarser(name: str, x: torch.Tensor) -> torch.Tensor:
    """``x`` through a grid one step coarser than the stated one, at the stated scales: int8 with twice
    the step, e4m3 with one mantissa bit less (e5m2), e2m1 under twice the scale."""
    s = engine_scale(name, x).float()
    if name == "int8_per_token_head":
        return formats.round_half_away(x / (2 * s)) * 2 * s
    if name == "fp4_mx_block16":
        return formats.e2m1_decode(formats.e2m1_encode(x / (2 * s))) * 2 * s
    return (x / s).clamp(-448, 448).to(torch.float8_e5m2).float() * s


# ---------------------------------------------------------------------------------------------- layout


def test_registered_with_their_engine_settings():
    for name, method in METHODS.items():
        assert REGISTRY[name] is type(method)
        assert type(method).engine == ENGINES[name]
        assert method.block == 1 and method.residual == 0
        assert method.capabilities.kind == "quant"
    assert VllmFP8().id == "vllm_fp8-ks1.0-vs1.0-res0"
    assert FP4MXBlock16(residual=8).id == "fp4_mx_block16-res8"


@pytest.mark.parametrize("name", METHODS)
@pytest.mark.parametrize("head_dim", [64, 128])
def test_bytes_per_token_and_head_are_the_engine_table(name, head_dim):
    """The stated layout (``quantized_nbytes``) and the bytes a packed token really holds both equal
    the engine's table entry, per token per KV head, keys + values."""
    method, want = METHODS[name], ENGINE_BYTES[name][head_dim]
    extra = PER_LAYER.get(name, 0)
    assert method.quantized_nbytes(1, 1, 1, head_dim) == want + extra
    assert method.quantized_nbytes(3, 4, 10, head_dim) == 3 * 4 * 10 * want + extra
    assert method.quantized_nbytes(3, 4, 0, head_dim) == 0
    x = random_kv(1, (1, 1, 1, head_dim))
    assert sum(p.nbytes() for p in both_codecs(method, x)) == want + extra
    x = random_kv(2, (2, 4, 9, head_dim))
    assert sum(p.nbytes() for p in both_codecs(method, x)) == 2 * 4 * 9 * want + extra


def test_packed_dtypes_are_the_engines():
    x = random_kv(3)
    assert METHODS["vllm_fp8"].quantize_keys(x, None).codes.dtype == torch.float8_e4m3fn
    assert METHODS["vllm_fp8"].quantize_keys(x, None).scale.shape == ()
    p = METHODS["int8_per_token_head"].quantize_keys(x, None)
    assert (p.codes.dtype, p.scale.dtype, p.scale.shape) == (torch.int8, torch.float32, (2, 3, 7, 1))
    p = METHODS["fp8_per_token_head"].quantize_keys(x, None)
    assert (p.codes.dtype, p.scale.dtype) == (torch.float8_e4m3fn, torch.float32)
    p = METHODS["mxfp8"].quantize_keys(x, None)
    assert (p.codes.dtype, p.scale.dtype, p.scale.shape) == (torch.float8_e4m3fn, torch.uint8, (2, 3, 7, 2))
    p = METHODS["fp4_mx_block16"].quantize_keys(x, None)
    assert (p.codes.dtype, p.codes.shape, p.scale.shape) == (torch.uint8, (2, 3, 7, 32), (2, 3, 7, 4))


@pytest.mark.parametrize("name", METHODS)
def test_cat_is_quantising_the_whole(name):
    """Blocks appended along the tokens decode like the whole quantised at once (every scale lies
    within one token), and their bytes add up (vllm_fp8's one scale is counted once)."""
    method, x = METHODS[name], random_kv(4)
    a, b, whole = method.quantize_keys(x[:, :, :3], None), method.quantize_keys(x[:, :, 3:], None), \
        method.quantize_keys(x, None)
    joined = a.cat(b)
    assert torch.equal(method.dequantize(joined, torch.float32), method.dequantize(whole, torch.float32))
    assert joined.nbytes() == whole.nbytes()


def test_small_heads_are_one_block_and_odd_heads_are_refused():
    """Heads narrower than the scale block (kvcheck's tiny test models) are one block; a head that is
    not a multiple of the block is refused with the reason."""
    for method, d, per_token in ((MXFP8(), 16, 2 * (16 + 1)), (FP4MXBlock16(), 8, 2 * (4 + 1))):
        assert method.quantized_nbytes(1, 1, 1, d) == per_token
        assert sum(p.nbytes() for p in both_codecs(method, random_kv(5, (1, 1, 1, d)))) == per_token
    with pytest.raises(KvcheckError, match="multiple of its 32-channel"):
        MXFP8().quantize_keys(torch.ones(1, 1, 1, 48), None)
    with pytest.raises(KvcheckError, match="multiple of its 16-channel"):
        FP4MXBlock16().quantize_keys(torch.ones(1, 1, 1, 40), None)


@pytest.mark.parametrize("make", [
    lambda: VllmFP8(k_scale=0.0), lambda: VllmFP8(v_scale=-1.0), lambda: VllmFP8(k_scale=float("nan")),
    lambda: VllmFP8(k_scale=float("inf")), lambda: VllmFP8(k_scale="1.0"), lambda: VllmFP8(v_scale=True),
    lambda: VllmFP8(residual=-1), lambda: Int8PerTokenHead(residual=1.5),
    lambda: FP8PerTokenHead(residual=True), lambda: MXFP8(residual=-2), lambda: FP4MXBlock16(residual="4"),
])
def test_bad_parameters_are_rejected(make):
    with pytest.raises(KvcheckError):
        make()


# --------------------------------------------------------------------------------------------- goldens


def test_int8_per_token_head_vllm_golden():
    """vLLM's golden case: bf16 [-127, -2.6, -2.4, -1.6, -1.4, -0.6, -0.4, 127] → scale 1.0 and codes the
    rounded values (no ties: bf16 holds -2.59375, -2.40625, …)."""
    x = torch.tensor([-127, -2.6, -2.4, -1.6, -1.4, -0.6, -0.4, 127], dtype=torch.bfloat16).view(1, 1, 1, 8)
    p = METHODS["int8_per_token_head"].quantize_keys(x, None)
    assert p.codes.flatten().tolist() == [-127, -3, -2, -2, -1, -1, 0, 127]
    assert p.scale.flatten().tolist() == [1.0]
    back = METHODS["int8_per_token_head"].dequantize(p, torch.float32)
    assert back.flatten().tolist() == [-127.0, -3.0, -2.0, -2.0, -1.0, -1.0, 0.0, 127.0]


def test_int8_per_token_head_ties_round_half_away_from_zero():
    """The tie vector pins the kernel's rounding: [127, 2.5, -2.5, 0.5, -0.5, 1.5] → [127, 3, -3, 1, -1, 2];
    ``torch.round`` (vLLM's pure-torch reference, ties to even) gives [127, 2, -2, 0, 0, 2]."""
    x = torch.tensor(TIES).view(1, 1, 1, 6)
    p = METHODS["int8_per_token_head"].quantize_values(x, None)
    assert p.scale.flatten().tolist() == [1.0]
    assert p.codes.flatten().tolist() == TIES_ROUND_HALF_AWAY
    assert torch.round(x).flatten().tolist() == TIES_TORCH_ROUND  # what the golden tells apart


def test_int8_per_token_head_scale_floor():
    """``scale = max(absmax/127, 1e-6)``: an all-zero vector gets 1e-6 (float32) and zero codes; a tiny
    one is quantised on the 1e-6 grid."""
    p = METHODS["int8_per_token_head"].quantize_keys(torch.cat([row([0.0], 8), row([1e-5, -3e-6, 4e-7], 8)], 2), None)
    assert p.scale.flatten().tolist() == [torch.tensor(1e-6).item()] * 2
    assert p.codes[0, 0, 0].tolist() == [0] * 8
    assert p.codes[0, 0, 1].tolist() == [10, -3, 0, 0, 0, 0, 0, 0]


def test_fp8_per_token_head_golden():
    """absmax 448 gives scale 1.0, so the codes are e4m3 of x itself: ties to even (1.0625 → 1, 1.1875 →
    1.25, ±2⁻¹⁰ → 0 and 3·2⁻¹⁰ → 2⁻⁸ in the subnormals), 300 → 288, −0.3 → −0.3125."""
    x = row([448.0, 1.0625, 1.1875, 2.0 ** -10, -3 * 2.0 ** -10, 300.0, -0.3], 8)
    p = METHODS["fp8_per_token_head"].quantize_keys(x, None)
    assert p.scale.flatten().tolist() == [1.0]
    want = [448.0, 1.0, 1.25, 0.0, -2.0 ** -8, 288.0, -0.3125, 0.0]
    assert p.codes.float().flatten().tolist() == want
    assert METHODS["fp8_per_token_head"].dequantize(p, torch.float32).flatten().tolist() == want
    zero = METHODS["fp8_per_token_head"].quantize_keys(row([0.0], 8), None)
    assert zero.scale.flatten().tolist() == [torch.tensor(1e-6).item()]


def test_vllm_fp8_golden_per_tensor_scale_and_saturation():
    """``e4m3(x / scale)``, saturated: at k_scale 2, 1000 → 448·2 and −2000 → −448·2 (no inf, no NaN),
    2.125 → 2 and 2.375 → 2.5 (ties to even of 1.0625 / 1.1875), 3·2⁻⁹ → 2⁻⁷; at v_scale 0.5, 2.125 →
    2 and 2.375 → 2.5 again (ties of 4.25 / 4.75 at spacing 0.5), 3·2⁻⁹ exact; the default scale is 1."""
    method = VllmFP8(k_scale=2.0, v_scale=0.5)
    x = row([1000.0, -2000.0, 2.125, 2.375, 3 * 2.0 ** -9, 0.0], 8)
    k = method.quantize_keys(x, None)
    assert k.scale.item() == 2.0
    assert method.dequantize(k, torch.float32).flatten().tolist() == [896.0, -896.0, 2.0, 2.5, 2.0 ** -7, 0, 0, 0]
    v = method.quantize_values(x, None)
    assert v.scale.item() == 0.5
    assert method.dequantize(v, torch.float32).flatten().tolist() == [224.0, -224.0, 2.0, 2.5, 3 * 2.0 ** -9,
                                                                     0, 0, 0]
    assert VllmFP8().quantize_keys(x, None).scale.item() == 1.0
    assert VllmFP8().quantize_keys(x, None).codes.float().flatten()[:2].tolist() == [448.0, -448.0]


def test_mxfp8_golden_scales_and_codes():
    """UE8M0 bytes ``ceil(log2(absmax/448)) + 127``: absmax 448 → 127; 449 → 128 (449/2 = 224.5 → e4m3
    224); 56 = 448·2⁻³ → 124 (exact at the power of two); 1.0 → 119 (1.0·2⁸ = 256); all zero → 0."""
    x = torch.cat([row([448.0, 1.0625] + [0.0] * 30 + [449.0, 3.0]),
                   row([56.0, -7.0] + [0.0] * 30 + [1.0, 0.5]),
                   row([0.0])], dim=2)
    method = METHODS["mxfp8"]
    p = method.quantize_keys(x, None)
    assert p.scale.flatten().tolist() == [127, 128, 124, 119, 0, 0]
    back = method.dequantize(p, torch.float32)
    assert back[0, 0, 0, [0, 1, 32, 33]].tolist() == [448.0, 1.0, 448.0, 3.0]
    assert back[0, 0, 1, [0, 1, 32, 33]].tolist() == [56.0, -7.0, 1.0, 0.5]
    assert p.codes[0, 0, 1, [0, 32]].float().tolist() == [448.0, 256.0]
    assert back[0, 0, 2].abs().sum().item() == 0.0


def test_fp4_mx_block16_golden_ties_up_and_nibbles():
    """absmax 6 → scale byte 127; ties round up (5 → 6, 3.5 → 4, 2.5 → 3, 1.75 → 2, 1.25 → 1.5, 0.75 → 1,
    0.25 → 0.5; vLLM's NVFP4 would round them to even), element 2i in the low nibble, −5 → code 15."""
    x = row(FP4_BLOCK + [6.01] + [0.0] * 15 + [3.0] + [0.0] * 15)  # blocks: ties, absmax 6.01, absmax 3, zeros
    method = METHODS["fp4_mx_block16"]
    p = method.quantize_keys(x, None)
    assert p.codes[0, 0, 0, :8].tolist() == [0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, 0xF0]
    assert p.scale.flatten().tolist() == [127, 128, 126, 94]  # 6.01/6 → 2¹; 3/6 → 2⁻¹; 0 → 1e-10 → 2⁻³³
    back = method.dequantize(p, torch.float32)[0, 0, 0]
    assert back[:16].tolist() == [6, 6, 4, 4, 3, 3, 2, 2, 1.5, 1.5, 1, 1, 0.5, 0.5, 0, -6]
    assert back[[16, 32]].tolist() == [6.0, 3.0] and back[48:].abs().sum().item() == 0.0
    signs = method.quantize_keys(row([-6.0, -0.1, -0.0, 0.1], 16), None)  # the sign bit is x < 0: −0.1 → 0x8
    assert signs.codes.flatten().tolist() == [0x8F, 0x00, 0, 0, 0, 0, 0, 0]
    # absmax/6 = 2^20·(1 + 2⁻²³): float32 log2 (SGLang's) rounds onto 20, one below the exact ceil, and
    # the entry saturates at 6·2^20, 0.5 away (inside the bound's 2⁻¹⁶·|x|)
    edge = method.quantize_keys(row([6291456.5], 16), None)
    assert edge.scale.flatten().tolist() == [147]
    assert method.dequantize(edge, torch.float32)[0, 0, 0, 0].item() == 6291456.0


# ------------------------------------------------------------------------------------- bounds and fixed point


@pytest.mark.parametrize("name", METHODS)
@pytest.mark.parametrize("data", ["random", "adversarial"])
def test_stored_scales_follow_the_rule(name, data):
    """Every stored scale equals the stated rule recomputed in float64 (up to the float32 rounding of
    absmax/qmax for the per-token-head formats; exactly for the power-of-two ones): a coarser scale
    cannot hide behind a bound derived from itself."""
    method = METHODS[name]
    x = random_kv(6) if data == "random" else adversarial_kv(name)
    want = engine_scale(name, x)
    for p in both_codecs(method, x):
        got = p.scale_per_entry() if hasattr(p, "scale_per_entry") else p.scale.expand_as(x)
        assert torch.allclose(got.double(), want, rtol=2.0 ** -23, atol=0.0), name


@pytest.mark.parametrize("name", METHODS)
@pytest.mark.parametrize("data", ["random", "adversarial"])
def test_error_bound_holds_and_a_coarser_grid_breaks_it(name, data):
    """|dq(q(x)) − x| ≤ error_bound(x) for every entry (NaN fails), the bound is reached within 1 % on
    the random data (it is not loose), and the same data through a grid one step coarser at the same
    scales exceeds it."""
    method = METHODS[name]
    x = random_kv(7) if data == "random" else adversarial_kv(name)
    for p in both_codecs(method, x):
        err = (method.dequantize(p, torch.float32) - x).abs()
        bound = p.error_bound(x)
        assert bool((err <= bound).all()), f"{name}: {int((~(err <= bound)).sum())} entries over the bound"
        if data == "random":
            assert float((err / bound).max()) > 0.99
        assert bool(((coarser(name, x) - x).abs() > bound).any()), f"{name}: a coarser grid stays within the bound"


@pytest.mark.parametrize("name", METHODS)
@pytest.mark.parametrize("data", ["random", "adversarial"])
def test_dequantised_output_is_a_fixed_point(name, data):
    """y = dq(q(x)) comes back bit for bit: dq(q(y)) == y. The per-token-head formats and vllm_fp8 also
    re-derive the same codes and scales (y's absmax lands on the code 127 / 448 again); mxfp8 and
    fp4_mx_block16 may re-express a block at half the scale (when its largest code is 224 / 3 or less,
    every value is still on the finer grid), so only the values are fixed there."""
    method = METHODS[name]
    x = random_kv(8) if data == "random" else adversarial_kv(name)
    for p in both_codecs(method, x):
        assert type(p).fixed_point  # what the packed type states, for the property suite to read
        y = method.dequantize(p, torch.float32)
        again = method.quantize_keys(y, None)
        assert torch.equal(method.dequantize(again, torch.float32), y)
        if name in ("vllm_fp8", "int8_per_token_head", "fp8_per_token_head"):
            assert torch.equal(again.scale, p.scale)
            assert torch.equal(again.codes.view(torch.uint8), p.codes.view(torch.uint8))


# ------------------------------------------------------------------------------------------ end to end


@pytest.fixture(scope="module")
def lm64(tiny_lm_d64):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield tiny_lm_d64
    torch.set_num_threads(threads)


PROMPTS = [[(7 * i + 3) % 120 + 3 for i in range(45)], [(5 * i + 11) % 120 + 3 for i in range(31)]]


@pytest.mark.parametrize("name", METHODS)
@pytest.mark.parametrize("residual", [0, 5])
def test_runs_through_the_cache_and_holds_the_stated_bytes(lm64, name, residual):
    """Prefill a left-padded batch on the tiny model (head_dim 64, 2 layers, 1 KV head), then decode 3
    steps: after each, every layer holds exactly the engine table's bytes for its quantised slots plus
    the full-precision residual (2 bytes per element counted), which is also ``stated_nbytes``, and
    every logit is finite."""
    method = type(METHODS[name])(residual=residual)
    cfg = lm64.model.config
    layers, kv_heads, d = cfg.num_hidden_layers, cfg.num_key_value_heads, cfg.hidden_size // cfg.num_attention_heads
    assert (layers, kv_heads, d) == (2, 1, 64)
    ids, valid = engine.left_pad(PROMPTS, lm64.tokenizer.pad_token_id, lm64.device)
    positions = (valid.long().cumsum(-1) - 1).clamp_min(0)
    cache = CompressedCache(method, layers)
    with torch.inference_mode():
        logits = engine.forward(lm64.model, ids, positions, valid, cache)
        for step in range(4):
            held, batch = ids.shape[1] + step, len(PROMPTS)
            quantised = held - residual
            want = layers * (batch * kv_heads * (quantised * ENGINE_BYTES[name][d] + residual * d * 2 * 2)
                             + PER_LAYER.get(name, 0))
            assert cache.kv_bytes(float_bytes=2) == want
            shape = CacheShape(batch, kv_heads, cfg.num_attention_heads // kv_heads, held, d)
            lengths = [len(p) + step for p in PROMPTS]
            assert sum(method.stated_nbytes(shape, lengths, i, layers, 2) for i in range(layers)) == want
            assert all(layer.n_quant == quantised for layer in cache.layers)
            assert bool(torch.isfinite(logits).all())
            nxt = logits[:, -1].argmax(-1)[:, None]
            pos = (valid.sum(-1) + step)[:, None]
            logits = engine.forward(lm64.model, nxt, pos, torch.ones_like(pos, dtype=torch.bool), cache)


# ------------------------------------------------------------------------------------- against the engines


def _vllm_writer():
    ops = pytest.importorskip("vllm.v1.attention.ops.triton_reshape_and_cache_flash",
                              reason="vLLM is not installed: its KV-cache writers are Triton kernels")
    return ops


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["int8_per_token_head", "fp8_per_token_head"])
def test_per_token_head_matches_vllm_triton_writer(name):
    """vLLM's ``triton_reshape_and_cache_flash_per_token_head_quant`` on bf16 keys/values (the tie
    vector and an all-zero head included) stores the same codes and float32 scales as kvcheck's rule;
    on the tie row the int8 codes are exactly [127, 3, −3, 1, −1, 2]."""
    ops = _vllm_writer()
    fn = ops.triton_reshape_and_cache_flash_per_token_head_quant
    dev, tokens, heads, d = torch.device("cuda"), 8, 2, 128
    g = torch.Generator().manual_seed(11)
    key = (torch.randn(tokens, heads, d, generator=g) * 3).to(torch.bfloat16)
    value = (torch.randn(tokens, heads, d, generator=g) * 0.05).to(torch.bfloat16)
    key[0, 0] = 0
    key[0, 0, :len(TIES)] = torch.tensor(TIES, dtype=torch.bfloat16)
    value[1, 1] = 0
    cache_dtype = torch.int8 if name.startswith("int8") else torch.float8_e4m3fn
    k_cache = torch.zeros(1, 16, heads, d, dtype=cache_dtype, device=dev)
    v_cache = torch.zeros_like(k_cache)
    k_scales = torch.zeros(1, 16, heads, dtype=torch.float32, device=dev)
    v_scales = torch.zeros_like(k_scales)
    kwargs = {}
    if "kv_quant_mode" in inspect.signature(fn).parameters:
        from vllm.v1.kv_cache_interface import KVQuantMode

        kwargs["kv_quant_mode"] = getattr(KVQuantMode, name.upper())
    fn(key.to(dev), value.to(dev), k_cache, v_cache, k_scales, v_scales, torch.arange(tokens, device=dev), **kwargs)
    method = METHODS[name]
    for x, codes, scales in ((key, k_cache, k_scales), (value, v_cache, v_scales)):
        ours = method.quantize_keys(x.float().transpose(0, 1)[None], None)  # [1, heads, tokens, d]
        theirs = codes[0, :tokens].transpose(0, 1)[None].cpu()
        assert torch.equal(theirs.view(torch.uint8), ours.codes.view(torch.uint8)), name
        assert torch.equal(scales[0, :tokens].transpose(0, 1)[None, ..., None].cpu(), ours.scale), name
    if name.startswith("int8"):
        assert k_cache[0, 0, 0, :len(TIES)].tolist() == TIES_ROUND_HALF_AWAY


@pytest.mark.gpu
def test_vllm_fp8_matches_vllm_triton_writer():
    """vLLM's ``triton_reshape_and_cache_flash`` with ``kv_cache_dtype="fp8"`` and per-tensor scales 2.0
    / 0.5 stores the same e4m3 codes as kvcheck's rule, saturated values included."""
    ops = _vllm_writer()
    dev, tokens, heads, d = torch.device("cuda"), 8, 2, 128
    g = torch.Generator().manual_seed(12)
    key = (torch.randn(tokens, heads, d, generator=g) * 40).to(torch.bfloat16)
    key[0, 0, :3] = torch.tensor([2000.0, -5000.0, 2.125], dtype=torch.bfloat16)
    value = (torch.randn(tokens, heads, d, generator=g)).to(torch.bfloat16)
    k_cache = torch.zeros(1, 16, heads, d, dtype=torch.float8_e4m3fn, device=dev)
    v_cache = torch.zeros_like(k_cache)
    k_scale = torch.tensor(2.0, device=dev)
    v_scale = torch.tensor(0.5, device=dev)
    ops.triton_reshape_and_cache_flash(key.to(dev), value.to(dev), k_cache, v_cache,
                                       torch.arange(tokens, device=dev), "fp8", k_scale, v_scale)
    method = VllmFP8(k_scale=2.0, v_scale=0.5)
    for x, codes, encode in ((key, k_cache, method.quantize_keys), (value, v_cache, method.quantize_values)):
        ours = encode(x.float().transpose(0, 1)[None], None)
        theirs = codes[0, :tokens].transpose(0, 1)[None].cpu()
        assert torch.equal(theirs.view(torch.uint8), ours.codes.view(torch.uint8))


def test_fp4_mx_block16_matches_sglang_helper():
    """SGLang's ``FP4MXBlock16KVQuantizeUtil`` (pure PyTorch, runs on the CPU) packs float32 input
    ``[tokens, heads, head_dim]`` into the same bytes and scale bytes as kvcheck, and decodes them to
    the same values."""
    mod = pytest.importorskip("sglang.srt.layers.quantization.kvfp4_tensor",
                              reason="SGLang is not installed (its fp4_mx_block16 helper is pure PyTorch)")
    util = mod.FP4MXBlock16KVQuantizeUtil
    x = random_kv(13, (1, 6, 2, 128))[0]  # [tokens, heads, head_dim]
    x[0, 0, :16] = torch.tensor(FP4_BLOCK)
    x[1, 1] = 0
    packed, scales = util.batched_quantize(x)
    ours = METHODS["fp4_mx_block16"].quantize_keys(x[None], None)  # rows in the same order
    assert torch.equal(packed.reshape(-1), ours.codes.reshape(-1))
    assert torch.equal(scales.reshape(-1), ours.scale.reshape(-1))
    back = util.batched_dequantize(packed, scales, torch.float32)
    assert torch.equal(back, METHODS["fp4_mx_block16"].dequantize(ours, torch.float32)[0])
