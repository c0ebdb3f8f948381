"""The method ↔ cache-layer protocol: imports run one way, the layer is chosen from the method's type,
methods return state rather than write it, and the retired capability flags are refused."""
from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

import kvcheck
from kvcheck import layer_api
from kvcheck.cache import (CompressedCache, DecodeEvictionLayer, EvictionLayer, FullLayer, QuantLayer,
                           StatefulEvictionLayer, layer_for)
from kvcheck.errors import KvcheckError
from kvcheck.methods import (FP8, H2O, KIVI, REGISTRY, TOVA, DecodeEviction, EvictionMethod, Full, IntQuant,
                             KNorm, Method, SnapKV, StreamingLLM)

ROOT = Path(kvcheck.__file__).parent


def imported_modules(path: Path) -> set[str]:
    """Absolute names of every module ``path`` imports, at module level or inside functions."""
    package = ".".join(path.relative_to(ROOT.parent).with_suffix("").parts[:-1])
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[:len(package.split(".")) - node.level + 1] if node.level else []
            mod = ".".join(base + ([node.module] if node.module else []))
            names.add(mod)
            names.update(f"{mod}.{a.name}" for a in node.names)
    return names


@pytest.mark.parametrize("path", sorted((ROOT / "methods").glob("*.py")), ids=lambda p: p.name)
def test_methods_never_import_the_cache(path):
    bad = {m for m in imported_modules(path) if m == "kvcheck.cache" or m.startswith("kvcheck.cache.")}
    assert not bad, f"{path.name} imports {sorted(bad)}"


@pytest.mark.parametrize("name", ["oracles.py", "scenarios.py", "layer_api.py", "cache/compressed.py",
                                  "cache/layers.py", "cache/eviction.py", "cache/quantized.py"])
def test_checks_and_cache_never_name_method_classes(name):
    bad = {m for m in imported_modules(ROOT / name) if m.startswith("kvcheck.methods")}
    assert not bad, f"{name} imports {sorted(bad)}"


def test_tova_does_not_import_h2o():
    assert "kvcheck.methods.h2o" not in imported_modules(ROOT / "methods" / "tova.py")


@pytest.mark.parametrize("method, layer", [
    (Full(), FullLayer), (KNorm(0.5), EvictionLayer), (SnapKV(0.5), EvictionLayer),
    (StreamingLLM(0.5), DecodeEvictionLayer), (TOVA(0.5), DecodeEvictionLayer), (H2O(0.5), StatefulEvictionLayer),
    (KIVI(), QuantLayer), (IntQuant(), QuantLayer), (FP8(), QuantLayer)], ids=lambda x: getattr(x, "name", ""))
def test_the_layer_follows_the_method_type(method, layer):
    assert type(layer_for(method, 0, 2)) is layer


def test_every_registered_method_has_a_built_in_layer():
    for cls in REGISTRY.values():
        assert cls().capabilities.kind in ("full", "eviction", "quant", "variable"), cls.name


def test_a_custom_method_builds_its_own_layer():
    class Mine(FullLayer):
        pass

    @dataclass(frozen=True)
    class Custom(Method):
        name = "custom_test"

        def make_layer(self, layer_idx, n_layers):
            return Mine(self, layer_idx, n_layers)

    cache = CompressedCache(Custom(), 3)
    assert [type(layer) for layer in cache.layers] == [Mine] * 3
    with pytest.raises(NotImplementedError, match="make_layer"):
        Method().make_layer(0, 1)


def test_the_retired_flags_are_refused_and_still_readable():
    with pytest.raises(KvcheckError, match="DecodeEviction"):
        @dataclass(frozen=True)
        class Old(EvictionMethod):
            name = "old_flags_test"
            acts_on_decode = True
    assert (H2O().acts_on_decode, H2O().stateful) == (True, True)
    assert (TOVA().acts_on_decode, TOVA().stateful) == (True, False)
    assert (SnapKV().acts_on_decode, KIVI().acts_on_decode) == (False, False)
    assert isinstance(TOVA(), DecodeEviction) and not isinstance(SnapKV(), DecodeEviction)


def test_quant_methods_declare_block_and_residual():
    for method, block in ((KIVI(group_size=16, residual=8), 16), (IntQuant(residual=3), 1), (FP8(residual=2), 1)):
        assert method.capabilities.block == method.block == block
        assert isinstance(method.residual, int)

    @dataclass(frozen=True)
    class NoBlock(kvcheck.QuantMethod):
        name = "no_block_test"

    with pytest.raises(NotImplementedError, match="block"):
        NoBlock().block


def test_h2o_observe_returns_new_state_and_leaves_the_old_one():
    g = torch.Generator().manual_seed(0)
    b, hk, n, d = 1, 2, 6, 4
    keys = torch.randn(b, hk, n, d, generator=g)
    pos = torch.arange(n)[None, None].expand(b, hk, n)
    held = layer_api.HeldSlots(keys, keys, pos, torch.ones(b, hk, n, dtype=torch.bool))
    state = {"score": torch.zeros(b, hk, n)}
    new = H2O(0.5, recent=1).observe(held, torch.randn(b, 2 * hk, 1, d, generator=g), 0.5, state)
    assert set(new) == {"score"} and new["score"] is not state["score"]
    assert torch.equal(state["score"], torch.zeros(b, hk, n))
    torch.testing.assert_close(new["score"].sum(-1), torch.ones(b, hk))


def test_packed_tensors_state_their_error_bound():
    x = torch.randn(1, 2, 8, 16)
    valid = torch.ones(1, 8, dtype=torch.bool)
    for method in (KIVI(bits=4, group_size=8), IntQuant(bits=8, group_size=8), FP8()):
        packed = method.quantize_keys(x, valid)
        assert isinstance(packed, layer_api.Packed)
        assert bool(((method.dequantize(packed, torch.float32) - x).abs() <= packed.error_bound(x)).all())
