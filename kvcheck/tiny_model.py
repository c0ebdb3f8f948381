"""A tiny random Llama with kvcheck attention and a byte-level tokenizer: for tests of mechanics
(caching, eviction, determinism, batch invariance), never for accuracy. Builds in well under a
second and needs no files."""
from __future__ import annotations

import torch

from .model import LoadedModel


class TinyTokenizer:
    """Byte-level stand-in tokenizer (ids 3..127 = bytes mod 125; 0 pad, 1 bos, 2 eos)."""

    pad_token_id = 0
    eos_token_id = 2

    def __call__(self, text, add_special_tokens=True, **kw):
        ids = [1] if add_special_tokens else []
        return {"input_ids": ids + [3 + (b % 125) for b in text.encode()]}

    def decode(self, ids, skip_special_tokens=True):
        return "".join(chr(i - 3 + 32) if 3 <= i < 128 else "" for i in ids)


def make_tiny(layers: int = 3, q_heads: int = 4, kv_heads: int = 2, seed: int = 0, hidden: int = 64) -> LoadedModel:
    """A random Llama (vocab 128, head_dim ``hidden // q_heads``) on CPU in float32; the same
    ``seed`` gives the same weights."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from .attention import register

    register()
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=128, hidden_size=hidden, intermediate_size=128, num_hidden_layers=layers,
                      num_attention_heads=q_heads, num_key_value_heads=kv_heads, max_position_embeddings=4096,
                      attn_implementation="kvcheck", eos_token_id=2, pad_token_id=0, bos_token_id=1)
    model = LlamaForCausalLM(cfg).eval()
    return LoadedModel(model, TinyTokenizer(), "tiny", torch.device("cpu"), torch.float32)
