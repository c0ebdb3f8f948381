"""``turboquant``: vLLM 0.33's TurboQuant presets — the engine's byte table, Lloyd–Max tables and
rotation, the packing and rounding rules, an error bound that holds and that a wrong rotation or table
breaks, the boundary layers kept at full precision, and prefill over the raw keys.

Golden values come from the spec's tables (bytes per slot, centroids to 7 significant digits) and from
vLLM 0.33.0's own CPU-side functions (``solve_lloyd_max``, ``_build_hadamard``, ``TurboQuantConfig``),
run on CPU from the 0.33.0 wheel. The engine's store kernel runs only on GPU: it is compared in
``test_store_matches_the_engine_kernel`` (skipped without vLLM and CUDA)."""
from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kvcheck import formats_turboquant as tqf
from kvcheck.cache import CompressedCache, FullLayer, QuantLayer
from kvcheck.engine import forward
from kvcheck.errors import KvcheckError
from kvcheck.methods import Full
from kvcheck.methods.turboquant import TQFp8Keys, TQKeys, TQValues, TurboQuant
from kvcheck.strategies import CacheShape
from kvcheck.suites import properties as layer_suite
from kvcheck.suites import properties_codec as codec_suite
from kvcheck.tiny_model import make_tiny

PRESETS = ["k8v4", "4bit_nc", "k3v4_nc", "3bit_nc"]

# the spec's table (vllm/config/cache.py presets, bytes computed with TurboQuantConfig):
# preset → {head_dim: (key bytes, value bytes, slot bytes)}
BYTES = {
    "k8v4": {64: (64, 36, 100), 128: (128, 68, 196)},
    "4bit_nc": {64: (34, 36, 70), 128: (66, 68, 134)},
    "k3v4_nc": {64: (26, 36, 62), 128: (50, 68, 118)},
    "3bit_nc": {64: (26, 28, 54), 128: (50, 52, 102)},
}

# Lloyd–Max centroids, positive half, as the spec prints them (float32 to 7 significant digits) ...
PUBLISHED = {
    (64, 3): "0.03062295 0.09445569 0.1678975 0.2687937",
    (64, 4): "0.01605346 0.04851722 0.08210999 0.117806 0.1570322 0.2022352 0.2585559 0.3413653",
    (128, 3): "0.0216537 0.06679026 0.1187215 0.1900658",
    (128, 4): "0.01135151 0.03430686 0.05806053 0.08330144 0.1110385 0.1430019 0.1828266 0.2413817",
}
# ... and their float32 bits, from vLLM 0.33.0's get_centroids (CPU, torch 2.13)
BITS = {
    (64, 3): "3cfadcfb 3dc171fc 3e2bed53 3e899f54",
    (64, 4): "3c83828a 3d46b9ff 3da82948 3df1444a 3e20cd0c 3e4f16c0 3e846170 3eaec76e",
    (128, 3): "3cb16317 3d88c955 3df3243d 3e42a09f",
    (128, 4): "3c39fbae 3d0c8559 3d6dd0e1 3daa99f2 3de3682b 3e126f17 3e3b36e7 3e772cc4",
}


def words(t: torch.Tensor) -> str:
    return " ".join(f"{w & 0xFFFFFFFF:08x}" for w in t.view(torch.int32).tolist())


def all_true(n: int) -> torch.Tensor:
    return torch.ones(1, n, dtype=torch.bool)


# ---------------------------------------------------------------------------------------- bytes


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("d", [64, 128])
def test_bytes_per_token_per_head_are_the_engines(preset, d):
    """Key, value and slot bytes per token and KV head: the formula, the stated layout and what the
    packed tensors really hold, for one token and for 2 × 3 heads × 5 tokens."""
    key, value, slot = BYTES[preset][d]
    kb, vb, _ = tqf.PRESETS[preset]
    assert (tqf.key_bytes(d, kb), tqf.value_bytes(d, vb), tqf.slot_bytes(d, preset)) == (key, value, slot)
    m = TurboQuant(preset)
    assert m.quantized_nbytes(1, 1, 1, d) == slot
    x = torch.randn(2, 3, 5, d)
    valid = torch.ones(2, 5, dtype=torch.bool)
    pk, pv = m.quantize_keys(x, valid), m.quantize_values(x, valid)
    assert (pk.nbytes(), pv.nbytes()) == (30 * key, 30 * value)
    assert m.quantized_nbytes(2, 3, 5, d) == 30 * slot


def test_an_odd_slot_is_padded_to_even():
    """k3v4_nc at head_dim 8: key 3 + 2, value 4 + 4 = 13 bytes, padded to 14 (held by the values)."""
    m = TurboQuant("k3v4_nc")
    x = torch.randn(1, 1, 4, 8)
    pk, pv = m.quantize_keys(x, all_true(4)), m.quantize_values(x, all_true(4))
    assert (pk.nbytes(), pv.nbytes(), tqf.slot_bytes(8, "k3v4_nc")) == (4 * 5, 4 * 9, 14)
    assert pk.cat(pk).nbytes() + pv.cat(pv).nbytes() == 8 * 14


# --------------------------------------------------------------------------- tables and rotation


@pytest.mark.parametrize("d, bits", sorted(PUBLISHED))
def test_lloyd_max_tables_match_the_published_ones(d, bits):
    """Every printed digit of the spec's table, the float32 bits of the engine's, sorted, and the
    negative half the exact mirror of the positive one."""
    c = tqf.centroids(d, bits)
    half = c[2 ** (bits - 1):]
    assert [format(v, ".7g") for v in half.tolist()] == PUBLISHED[(d, bits)].split()
    assert words(half) == BITS[(d, bits)]
    assert torch.equal(c[:2 ** (bits - 1)], -half.flip(0))
    assert bool((c[1:] > c[:-1]).all())
    assert torch.equal(tqf.midpoints(c)[2 ** (bits - 1) - 1], torch.tensor(0.0))  # the middle edge is 0


def test_lloyd_max_tables_are_bit_equal_to_the_engines_function():
    """vLLM's ``centroids.py`` (torch and the standard library only) loaded by path from an installed
    vLLM, compared at every head_dim kvcheck accepts. Skipped without vLLM."""
    spec = importlib.util.find_spec("vllm")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("vLLM is not installed: the tables are checked against its published bits instead")
    path = Path(list(spec.submodule_search_locations)[0]) / "model_executor/layers/quantization/turboquant/centroids.py"
    if not path.exists():
        pytest.skip(f"this vLLM has no {path.name} under quantization/turboquant")
    loader = importlib.util.spec_from_file_location("_vllm_tq_centroids", path)
    engine = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(engine)
    for d in (8, 16, 32, 64, 128, 256):
        for bits in (3, 4):
            assert words(engine.get_centroids(d, bits)) == words(tqf.centroids(d, bits)), (d, bits)


def test_hadamard_is_sylvester_with_no_sign_vector():
    """Rows of H·√8 as sign bits (MSB = element 0, 1 = +1), from [[H, H], [H, −H]]; at 128 every sign
    is (−1)^popcount(i & j) and every magnitude the float32 1/√128; symmetric and orthonormal."""
    h8 = tqf.hadamard(8)
    rows = [int("".join("1" if v > 0 else "0" for v in row), 2) for row in h8.tolist()]
    assert rows == [0xFF, 0xAA, 0xCC, 0x99, 0xF0, 0xA5, 0xC3, 0x96]
    assert torch.equal(tqf.hadamard(2), torch.tensor([[1.0, 1.0], [1.0, -1.0]]) / math.sqrt(2))
    h = tqf.hadamard(128)
    i = torch.arange(128)
    parity = torch.tensor([bin(v).count("1") % 2 for v in (i[:, None] & i[None, :]).flatten().tolist()])
    assert torch.equal(torch.sign(h).flatten(), 1.0 - 2.0 * parity.float())
    assert words(h.abs().unique()) == "3db504f3"  # float32(1/√128)
    assert torch.equal(h, h.T)
    assert torch.allclose(h @ h, torch.eye(128), atol=2e-6)
    with pytest.raises(KvcheckError, match="power of two"):
        tqf.hadamard(96)


# ------------------------------------------------------------------------ packing and rounding


def test_packing_byte_order():
    """4-bit: byte i = q[2i] | q[2i+1] << 4; 3-bit: 8 codes → the 24-bit little-endian Σ q[j] << 3j."""
    assert tqf.pack(torch.tensor([1, 2, 3, 4]), 4).tolist() == [0x21, 0x43]
    assert tqf.pack(torch.arange(8), 3).tolist() == [0x88, 0xC6, 0xFA]  # 0o76543210 = 0xFAC688
    gen = torch.Generator().manual_seed(1)
    for bits in (3, 4):
        codes = torch.randint(0, 2 ** bits, (3, 2, 64), generator=gen)
        packed = tqf.pack(codes, bits)
        assert packed.shape[-1] == 64 * bits // 8
        assert torch.equal(tqf.unpack(packed, bits), codes)


@pytest.mark.parametrize("preset, top, middle", [("4bit_nc", 15, 8), ("3bit_nc", 7, 4)])
def test_key_codes_of_a_hadamard_row(preset, top, middle):
    """The key 8·H[5] at head_dim 64 rotates to exactly 8·e₅: coordinate 5 takes the top code, and the
    others sit exactly on the middle edge 0 and take the code above it (ties go up); the norm is
    stored as fp16 8; dequantised, the key comes back as 8·(c′·H)."""
    m = TurboQuant(preset)
    h = tqf.hadamard(64)
    key = (8 * h[5]).view(1, 1, 1, 64)
    packed = m.quantize_keys(key, all_true(1))
    codes = tqf.unpack(packed.codes, m.key_bits).flatten().tolist()
    assert codes == [middle] * 5 + [top] + [middle] * 58
    assert packed.norm.flatten().tolist() == [8.0]
    c = tqf.centroids(64, m.key_bits)[torch.tensor(codes)]
    want = 8 * ((c / torch.sqrt((c * c).sum() + 1e-16)) @ h)
    assert torch.allclose(m.dequantize(packed, torch.float32).flatten(), want, rtol=0, atol=1e-6)


def test_value_codes_round_half_up():
    """min 0, max 15 → scale 1: (v − 0)/1 + 0.5 truncated, so 0.5 → 1, 2.5 → 3 (half to even would
    give 0 and 2); 3-bit: max 7 → scale 1 as well. fp16 scale 1 and zero 0 are stored."""
    v = torch.tensor([0.0, 0.5, 1.5, 2.5, 3.49, 14.5, 15.0, 7.0]).view(1, 1, 1, 8)
    p4 = TurboQuant("4bit_nc").quantize_values(v, all_true(1))
    assert tqf.unpack(p4.codes, 4).flatten().tolist() == [0, 1, 2, 3, 3, 15, 15, 7]
    assert (p4.scale.item(), p4.zero.item()) == (1.0, 0.0)
    v3 = torch.tensor([0.0, 0.5, 1.5, 2.5, 3.49, 6.5, 7.0, 4.5]).view(1, 1, 1, 8)
    p3 = TurboQuant("3bit_nc").quantize_values(v3, all_true(1))
    assert tqf.unpack(p3.codes, 3).flatten().tolist() == [0, 1, 2, 3, 3, 7, 7, 5]
    assert (p3.scale.item(), p3.zero.item()) == (1.0, 0.0)


def test_fp16_stores_round_to_nearest_and_saturate():
    """scale 0.1 is stored as the nearest fp16 (not rounded outward); a constant vector gets the scale
    floor 1e-8, which fp16 rounds to 0, and comes back as fp16(min); stores beyond 65504 saturate."""
    m = TurboQuant("4bit_nc")
    v = torch.linspace(0, 1.5, 8).view(1, 1, 1, 8)
    p = m.quantize_values(v, all_true(1))
    assert p.scale.item() == torch.tensor(0.1).half().item()
    const = torch.full((1, 1, 1, 8), 3.14159)
    pc = m.quantize_values(const, all_true(1))
    assert (pc.scale.item(), pc.zero.item()) == (0.0, torch.tensor(3.14159).half().item())
    assert torch.equal(m.dequantize(pc, torch.float32), torch.full_like(const, torch.tensor(3.14159).half().item()))
    big = torch.full((1, 1, 1, 64), 1e4)  # norm 8e4: fp16 would overflow
    assert m.quantize_keys(big, all_true(1)).norm.item() == 65504.0


# ------------------------------------------------------------------------------ error bound


def tensors(seed: int, d: int):
    """A few draws at head_dim d: normal, scaled, with an outlier channel, uniform, tiny."""
    gen = torch.Generator().manual_seed(seed)
    base = torch.randn(2, 3, 24, d, generator=gen)
    out = base.clone()
    out[..., 3] *= 40
    return [base, base * 1e3, base * 1e-3, out, torch.rand(2, 3, 24, d, generator=gen) * 7 - 2]


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("d", [8, 16, 64, 128])
def test_error_bound_holds_on_random_data(preset, d):
    """|dq(q(x)) − x| ≤ error_bound(x) on every entry, keys and values, and the bound is tight: the
    error reaches at least half of it somewhere (a bound that could not fail would not)."""
    m = TurboQuant(preset)
    for i, x in enumerate(tensors(d, d)):
        valid = torch.ones(x.shape[0], x.shape[2], dtype=torch.bool)
        for name, encode in (("keys", m.quantize_keys), ("values", m.quantize_values)):
            packed = encode(x, valid)
            err = (m.dequantize(packed, torch.float32) - x).abs()
            bound = packed.error_bound(x)
            assert bool((err <= bound).all()), f"{name}, draw {i}: worst |err| − bound {float((err - bound).max())}"
            assert float((err / bound).max()) > 0.5, f"{name}, draw {i}: the bound is loose"


def rule_keys(x: torch.Tensor, h: torch.Tensor, table: torch.Tensor, nc: bool = True) -> torch.Tensor:
    """The key rule written out with a given rotation and table (for the rules the bound must reject)."""
    n = x.norm(dim=-1, keepdim=True)
    c = table[tqf.bucketize((x / (n + 1e-8)) @ h, tqf.midpoints(table))]
    if nc:
        c = c / torch.sqrt((c * c).sum(-1, keepdim=True) + 1e-16)
    return tqf.to_f16(n).float() * (c @ h)


@pytest.mark.parametrize("bits", [3, 4])
@pytest.mark.parametrize("d", [16, 64, 128])
def test_error_bound_rejects_a_wrong_rotation_or_table(bits, d):
    """The rule written out with the engine's rotation and table stays within the bound; with signs
    flipped (S·H·S: still symmetric and orthonormal, so the round trip still works; or S·H), with the
    table of another head_dim, or without NC, many entries exceed it."""
    gen = torch.Generator().manual_seed(d + bits)
    x = torch.randn(4, 2, 16, d, generator=gen)
    bound = TQKeys(torch.empty(0), torch.empty(0), bits, d).error_bound(x)
    h, table = tqf.hadamard(d), tqf.centroids(d, bits)
    assert bool(((rule_keys(x, h, table) - x).abs() <= bound).all())
    s = torch.where(torch.rand(d, generator=gen) < 0.5, -1.0, 1.0)
    wrong = {"S·H·S": (s[:, None] * h * s, table, True), "S·H": (s[:, None] * h, table, True),
             "table of 2d": (h, tqf.centroids(2 * d, bits), True), "no NC": (h, table, False)}
    for name, (hw, tw, nc) in wrong.items():
        over = float(((rule_keys(x, hw, tw, nc) - x).abs() > bound).float().mean())
        assert over > 0.05, f"{name}: only {over:.1%} of entries over the bound"


def test_value_bound_rejects_wrong_rounding_or_scale():
    """Truncating instead of rounding half up, or a step of range/2^b, exceeds the values' bound."""
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 2, 32, 64, generator=gen)
    bound = TurboQuant("4bit_nc").quantize_values(x, torch.ones(2, 32, dtype=torch.bool)).error_bound(x)
    lo, hi = x.amin(-1, keepdim=True), x.amax(-1, keepdim=True)
    for name, step, half in (("truncation", (hi - lo) / 15, 0.0), ("range/16", (hi - lo) / 16, 0.5)):
        q = ((x - lo) / step + half).floor().clamp(0, 15)
        back = q * step.half().float() + lo.half().float()
        assert bool(((back - x).abs() > bound).any()), name


@pytest.mark.parametrize("preset", PRESETS)
@settings(max_examples=40, deadline=None, derandomize=True)
@given(data=st.data())
def test_codec_property_suite(preset, data):
    """kvcheck's codec property (suites/test_properties_codec.py) on drawn blocks: left padding, up to
    ±1e4, outlier channels, constant groups, lone extremes."""
    codec_suite.test_round_trip_error_within_the_analytic_bound.hypothesis.inner_test(
        kv_method=TurboQuant(preset), data=data)


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("prop", ["test_bytes_follow_the_stated_formula", "test_finite_in_finite_out",
                                  "test_attention_is_exact_over_the_kept_set"])
@settings(max_examples=25, deadline=None, derandomize=True)
@given(data=st.data())
def test_layer_property_suite(preset, prop, data):
    """kvcheck's layer properties (suites/test_properties.py) on drawn scenarios, every layer position
    of up to 8 layers (boundary layers full precision): the stated bytes, finite outputs, exact
    attention over the held (dequantised) slots."""
    getattr(layer_suite, prop).hypothesis.inner_test(kv_method=TurboQuant(preset), data=data)


# --------------------------------------------------------------------------------- the method


def test_method_id_engine_and_bad_input():
    assert [TurboQuant(p).id for p in PRESETS] == ["turboquant-pk8v4", "turboquant-p4bit_nc",
                                                     "turboquant-pk3v4_nc", "turboquant-p3bit_nc"]
    assert TurboQuant("k3v4_nc").engine == "vLLM --kv-cache-dtype turboquant_k3v4_nc"
    assert TurboQuant.engine == "vLLM --kv-cache-dtype turboquant_{k8v4,4bit_nc,k3v4_nc,3bit_nc}"
    assert (TurboQuant().block, TurboQuant().residual) == (1, 0)
    with pytest.raises(KvcheckError, match="preset must be one of"):
        TurboQuant("4bit")
    with pytest.raises(KvcheckError, match="power of two"):
        TurboQuant("4bit_nc").quantize_values(torch.zeros(1, 1, 1, 96), all_true(1))


@pytest.mark.parametrize("n_layers, quantised", [
    (1, [0]), (2, []), (3, [1]), (4, []), (5, [2]), (6, [2, 3]), (32, list(range(2, 30)))])
def test_boundary_layers_by_the_engines_rule(n_layers, quantised):
    """The first and last min(2, L // 2) layers are skipped (vLLM's get_boundary_skip_layers)."""
    m = TurboQuant("4bit_nc")
    assert [i for i in range(n_layers) if m.quantizes_layer(i, n_layers)] == quantised
    layers = CompressedCache(m, n_layers).layers
    assert [i for i, layer in enumerate(layers) if type(layer) is QuantLayer] == quantised
    assert all(type(layer) is FullLayer for i, layer in enumerate(layers) if i not in quantised)


@pytest.fixture(scope="module")
def six_layers():
    """Six layers, head_dim 64 (3 query heads, 1 KV head): layers 0, 1, 4, 5 stay full precision."""
    return make_tiny(layers=6, q_heads=3, kv_heads=1, hidden=192)


def run(lm, method, ids: torch.Tensor, steps: int = 0):
    b, t = ids.shape
    cache = CompressedCache(method, lm.model.config.num_hidden_layers)
    with torch.inference_mode():
        logits = [forward(lm.model, ids, torch.arange(t)[None].expand(b, t), torch.ones(b, t, dtype=torch.bool),
                          cache, logits_to_keep=0)]
        for s in range(steps):
            logits.append(forward(lm.model, torch.full((b, 1), 5 + s), torch.full((b, 1), t + s),
                                  torch.ones(b, 1, dtype=torch.bool), cache))
    return cache, logits


@pytest.mark.parametrize("preset", PRESETS)
def test_boundary_layers_hold_full_precision_bytes(six_layers, preset):
    """After a 37-token prefill of 2 samples and 3 decode steps: layers 0, 1, 4, 5 hold 2 × 1 head ×
    tokens × 64 × 4 bytes (float32 keys and values), layers 2 and 3 the engine's slot per token and
    head (100 / 70 / 62 / 54 bytes), and each equals the stated layout after prefill."""
    m = TurboQuant(preset)
    slot = BYTES[preset][64][2]
    torch.manual_seed(0)
    ids = torch.randint(3, 120, (2, 37))
    cache, _ = run(six_layers, m, ids)
    shape = CacheShape(batch=2, kv_heads=1, groups=3, seq=37, head_dim=64)
    for i, layer in enumerate(cache.layers):
        want = 2 * 1 * 37 * 64 * 4 * 2 if i in (0, 1, 4, 5) else 2 * 1 * 37 * slot
        assert layer.nbytes() == want == m.stated_nbytes(shape, [37, 37], i, 6, 4), i
    cache, _ = run(six_layers, m, ids, steps=3)
    assert [layer.nbytes() for layer in cache.layers] == [2 * 40 * 64 * 4 * 2] * 2 + [2 * 40 * slot] * 2 + \
        [2 * 40 * 64 * 4 * 2] * 2
    assert [getattr(layer, "n_quant", None) for layer in cache.layers] == [None, None, 40, 40, None, None]


@pytest.mark.parametrize("preset", PRESETS)
def test_prefill_attends_over_the_raw_keys(six_layers, preset):
    """The prefill's logits equal the full cache's bit for bit (kvcheck's quantised layer attends over
    the raw keys and values, then quantises them after the forward, as the engine's first-chunk
    prefill does); the next step reads the codes, so its logits differ."""
    torch.manual_seed(1)
    ids = torch.randint(3, 120, (1, 29))
    _, full = run(six_layers, Full(), ids, steps=1)
    cache, tq = run(six_layers, TurboQuant(preset), ids, steps=1)
    assert torch.equal(tq[0], full[0])
    assert not torch.equal(tq[1], full[1])
    assert (cache.layers[2].n_quant, cache.layers[2].keys.shape[2]) == (30, 0)


# -------------------------------------------------------------------------------- the engine


@pytest.mark.gpu
@pytest.mark.parametrize("preset", PRESETS)
def test_store_matches_the_engine_kernel(preset):
    """vLLM's Triton store (``triton_turboquant_store``) against kvcheck's codes, slot by slot: fp16
    norm, scale and zero equal or one fp16 step apart, key and value codes equal except near a
    decision edge (under 0.1 % of them: GPU and CPU float32 differ in summation order)."""
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device: the engine's store kernel runs only on GPU")
    store = pytest.importorskip("vllm.v1.attention.ops.triton_turboquant_store")
    m = TurboQuant(preset)
    d, heads, n = 128, 4, 64
    gen = torch.Generator().manual_seed(0)
    key, value = torch.randn(n, heads, d, generator=gen), torch.randn(n, heads, d, generator=gen)
    slot = tqf.slot_bytes(d, preset)
    cache = torch.zeros(1, n, heads, slot, dtype=torch.uint8, device="cuda")
    bits = m.value_bits if m.key_bits == 8 else m.key_bits  # k8v4 builds centroids it does not use
    store.triton_turboquant_store(
        key.cuda().half(), value.cuda().half(), cache, torch.arange(n, dtype=torch.int32, device="cuda"),
        tqf.hadamard(d, "cuda"), tqf.midpoints(tqf.centroids(d, bits)).cuda(), mse_bits=bits,
        key_packed_size=tqf.key_bytes(d, m.key_bits), value_quant_bits=m.value_bits, key_fp8=m.key_bits == 8)
    got = cache.cpu().view(n, heads, slot).transpose(0, 1)[None]  # [1, heads, n, slot]
    k16, v16 = key.half().float().transpose(0, 1)[None], value.half().float().transpose(0, 1)[None]
    pk, pv = m.quantize_keys(k16, all_true(n)), m.quantize_values(v16, all_true(n))
    kb = tqf.key_bytes(d, m.key_bits)
    vcodes = tqf.code_bytes(d, m.value_bits)
    if m.key_bits == 8:
        assert float((got[..., :d] != pk.codes.view(torch.uint8)).float().mean()) < 1e-3
    else:
        mine = tqf.unpack(pk.codes, m.key_bits)
        theirs = tqf.unpack(got[..., :kb - 2].contiguous(), m.key_bits)
        assert float((mine != theirs).float().mean()) < 1e-3
        norm = got[..., kb - 2:kb].contiguous().view(torch.float16)
        assert float((norm.float() - pk.norm.float()).abs().max()) <= float(tqf.f16_error(pk.norm).max()) * 2
    vals = got[..., kb:kb + vcodes].contiguous()
    assert float((tqf.unpack(vals, m.value_bits) != tqf.unpack(pv.codes, m.value_bits)).float().mean()) < 1e-3
    meta = got[..., kb + vcodes:kb + vcodes + 4].contiguous().view(torch.float16)
    for i, stored in enumerate((pv.scale, pv.zero)):
        step = 2 * tqf.f16_error(stored).float()
        assert bool(((meta[..., i:i + 1].float() - stored.float()).abs() <= step).all())


def test_packed_types_state_their_bytes():
    """nbytes counts every tensor held (codes, norms, scales, zeros) and the pad bytes."""
    k = TQKeys(torch.zeros(1, 2, 3, 24, dtype=torch.uint8), torch.zeros(1, 2, 3, 1, dtype=torch.float16), 3, 64)
    f = TQFp8Keys(torch.zeros(1, 2, 3, 64, dtype=torch.float8_e4m3fn))
    v = TQValues(torch.zeros(1, 2, 3, 32, dtype=torch.uint8), torch.zeros(1, 2, 3, 1, dtype=torch.float16),
                 torch.zeros(1, 2, 3, 1, dtype=torch.float16), 4, 64, pad=1)
    assert (k.nbytes(), f.nbytes(), v.nbytes()) == (6 * 26, 6 * 64, 6 * 37)
