"""Shared fixtures for kvcheck's own tests: a tiny random Llama (mechanics only) and the real
default model (accuracy and equivalence claims)."""
from __future__ import annotations

import os

import pytest
import torch

from kvcheck.model import LoadedModel

pytest_plugins = ["pytester"]

# pytester gives each run its own HOME; keep the converted default model where it already is, so a
# subprocess run loads it in a second instead of converting the GGUF file again
os.environ.setdefault("KVCHECK_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "kvcheck"))


class TinyTokenizer:
    """Byte-level stand-in tokenizer for the tiny model (ids 3..130 = bytes mod 128)."""

    pad_token_id = 0
    eos_token_id = 2

    def __call__(self, text, add_special_tokens=True, **kw):
        ids = [1] if add_special_tokens else []
        return {"input_ids": ids + [3 + (b % 125) for b in text.encode()]}

    def decode(self, ids, skip_special_tokens=True):
        return "".join(chr(i - 3 + 32) if 3 <= i < 128 else "" for i in ids)


def make_tiny(layers: int = 3, q_heads: int = 4, kv_heads: int = 2, seed: int = 0, hidden: int = 64) -> LoadedModel:
    from transformers import LlamaConfig, LlamaForCausalLM

    from kvcheck.attention import register

    register()
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=128, hidden_size=hidden, intermediate_size=128, num_hidden_layers=layers,
                      num_attention_heads=q_heads, num_key_value_heads=kv_heads, max_position_embeddings=4096,
                      attn_implementation="kvcheck", eos_token_id=2, pad_token_id=0, bos_token_id=1)
    model = LlamaForCausalLM(cfg).eval()
    return LoadedModel(model, TinyTokenizer(), "tiny", torch.device("cpu"), torch.float32)


@pytest.fixture(scope="session")
def tiny_lm():
    return make_tiny()


@pytest.fixture(scope="session")
def tiny_lm_d64():
    """Tiny model with the default model's head geometry (head_dim 64, GQA 3:1) for byte accounting."""
    return make_tiny(layers=2, q_heads=3, kv_heads=1, hidden=192)


@pytest.fixture(scope="session")
def real_lm():
    from kvcheck.model import load_model

    return load_model()
