"""kvpress for the tests that compare with it: imported if it can be, else the reason. kvpress pins
transformers < 5.3, so these tests run in the environment benchmarks/kvpress_env.sh builds and skip
elsewhere, unless KVCHECK_REQUIRE_ADAPTERS names the package (CI's side-environment run sets it):
then a package that will not import is an error, not a skip."""
from __future__ import annotations

import os

import pytest
import torch

from kvcheck import engine

REQUIRED = set(filter(None, os.environ.get("KVCHECK_REQUIRE_ADAPTERS", "").split(",")))


def _import_kvpress():
    try:
        import kvpress
    except Exception as exc:  # missing, or built for another transformers
        return None, f"{type(exc).__name__}: {exc}"
    return kvpress, ""


kvpress, KVPRESS_MISSING = _import_kvpress()
if "kvpress" in REQUIRED and kvpress is None:
    raise ImportError(f"KVCHECK_REQUIRE_ADAPTERS names kvpress, which does not import here: {KVPRESS_MISSING}")
needs_kvpress = pytest.mark.skipif(
    kvpress is None, reason=f"kvpress is not importable here ({KVPRESS_MISSING[:120]}); kvpress is compared with "
                            "in the environment benchmarks/kvpress_env.sh builds")


@torch.inference_mode()
def kvpress_kept(lm, press, prompt: list[int]) -> list[torch.Tensor]:
    """Positions kept per layer ``[kv_heads, n]`` by kvpress's own pipeline (hooks on the model, a
    DynamicCache), read off by matching its kept keys to a full run's keys."""
    from transformers import DynamicCache

    from kvcheck.adapters.kvpress import kept_positions

    ids = torch.tensor([prompt])
    arg = engine.cache_arg(lm.model)
    full, pressed = DynamicCache(), DynamicCache()
    lm.model(input_ids=ids, use_cache=True, **{arg: full})
    with press(lm.model):
        lm.model(input_ids=ids, use_cache=True, **{arg: pressed})
    return [kept_positions(p.keys[0], f.keys[0]) for p, f in zip(pressed.layers, full.layers)]
