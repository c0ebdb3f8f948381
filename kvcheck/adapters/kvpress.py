"""kvpress presses as kvcheck methods.

A kvpress ``ScorerPress`` is an eviction rule: ``score(...)`` gives ``[batch, kv_heads, seq]`` keep scores
and ``compress`` keeps the top ``n_kept`` per KV head. :class:`KvpressMethod` calls the press's own
``score`` with the tensors kvcheck has at prefill, then kvcheck's cache keeps the same number of
best-scored tokens (``compute_n_kept``, or ``get_layer_budget`` for ``PyramidKVPress``), physically::

    # conftest.py
    import kvcheck
    from kvpress import SnapKVPress
    from kvcheck.adapters.kvpress import KvpressMethod

    @kvcheck.method(params=[0.5], ids=lambda r: f"r{r}")
    def snapkv_press(ratio):
        return KvpressMethod(SnapKVPress(compression_ratio=ratio, window_size=16))

What the press sees. kvpress calls ``score(module, hidden_states, keys, values, attentions, kwargs)``
from a forward hook on the attention module. kvcheck scores from inside its attention function (and
from a replayed prefill), where the layer's queries, keys and values exist but its input hidden states
do not. The adapter therefore hands the press a stand-in module (the model's head counts and layer
index; ``q_proj`` is the identity) and, as ``hidden_states``, the post-RoPE queries laid out
``[batch, seq, q_heads × head_dim]``, with identity rotary embeddings (cos 1, sin 0) in ``kwargs``.
kvpress's ``get_prerope_query_states`` + RoPE then returns exactly the queries the layer attended
with, so the press's own arithmetic runs on the same numbers as in its pipeline. ``attentions`` is
None (kvpress's default with SDPA). Presses are run one sample at a time on the sample's real tokens
(left padding cut off), as kvpress runs them (batch 1, no padding).

Presses whose scores are computed this way are listed in :data:`SUPPORTED`. Others are refused: they
need the full attention matrix (``ObservedAttentionPress``), hidden states or pre-RoPE keys
(``ExpectedAttentionPress``, ``CapPress``, ``LeverageScorePress``, ``CompactorPress``), weights or
files of their own (``QFilterPress``, ``KVzapPress``), the attention module's projections
(``CriticalKVPress``), or are not ``ScorerPress`` rules at all (``AdaKVPress``, ``ChunkPress``,
``DecodingPress``, ``ThinKPress``, ``DuoAttentionPress``, ``KeyRerotationPress``, ``ComposedPress`` …).
A press of your own that scores from keys, values and queries only can be let in with
``unlisted=True``; it is then your claim that it reads nothing else.

Differences kept on purpose: kvpress compresses at prefill only, so does this method; kvpress's
pipeline reorders kept slots by score, kvcheck keeps them in positional order (keys carry their RoPE,
so attention is the same); ties in the scores are broken by position (kvpress: ``topk``'s order).
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from types import SimpleNamespace

import torch

from ..errors import KvcheckError
from ..methods.base import EvictionMethod, ScoreInputs, check_ratio, format_value

INSTALL_HINT = 'pip install "kvcheck[kvpress]" (kvpress pins transformers<5.3; see benchmarks/kvpress_env.sh)'

# presses whose score reads only keys, values, the queries and the head counts / layer index → id part
SUPPORTED = {"KnormPress": "knorm", "StreamingLLMPress": "streaming_llm", "SnapKVPress": "snapkv",
             "PyramidKVPress": "pyramidkv", "TOVAPress": "tova", "RandomPress": "random", "KeyDiffPress": "keydiff",
             "LagKVPress": "lagkv", "CURPress": "cur", "NonCausalAttnPress": "non_causal_attn"}


def _scorer_press_class():
    try:
        from kvpress import ScorerPress
    except Exception as exc:  # not installed, or incompatible with the installed transformers
        raise KvcheckError(f"kvpress is not importable ({type(exc).__name__}: {exc}); install it with "
                           f"{INSTALL_HINT}.") from exc
    return ScorerPress


def _snake(name: str) -> str:
    base = name[:-5] if name.endswith("Press") else name
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", base).lower()


def press_params(press) -> dict:
    """The press's dataclass fields, in order (its whole configuration)."""
    return {f.name: getattr(press, f.name) for f in dataclasses.fields(press)}


@dataclass(frozen=True, eq=False, init=False)
class KvpressMethod(EvictionMethod):
    """A kvpress ``ScorerPress`` as a kvcheck eviction method; its id is built from the press.

    ``press``: the press instance (its ``compression_ratio`` is the method's). ``unlisted``: accept a
    ``ScorerPress`` outside :data:`SUPPORTED` (see the module docstring). ``compression_ratio``, when
    given, replaces the press's (so ``dataclasses.replace(method, compression_ratio=0)`` works).
    """

    name = "kvpress"

    press: object = None
    unlisted: bool = False

    def __init__(self, press, unlisted: bool = False, compression_ratio: float | None = None):
        scorer = _scorer_press_class()
        cls = type(press).__name__
        if not isinstance(press, scorer) or not dataclasses.is_dataclass(press):
            raise KvcheckError(f"KvpressMethod needs a kvpress ScorerPress instance, got {cls}; presses that are not "
                               f"score-and-keep rules cannot be adapted. Supported: {', '.join(SUPPORTED)}.")
        if cls not in SUPPORTED and not unlisted:
            raise KvcheckError(f"{cls} is not one of the presses KvpressMethod supports ({', '.join(SUPPORTED)}): "
                               "it needs inputs kvcheck does not have at prefill (hidden states, pre-RoPE keys, "
                               "the attention matrix or extra weights). If it scores from keys, values and "
                               "queries only, pass unlisted=True.")
        for k, v in press_params(press).items():
            if not isinstance(v, (bool, int, float, str, type(None))):
                raise KvcheckError(f"{cls}.{k} is a {type(v).__name__}; KvpressMethod adapts presses whose "
                                   "fields are plain values (the method id is built from them).")
        if compression_ratio is not None and compression_ratio != press.compression_ratio:
            check_ratio(compression_ratio)
            press = dataclasses.replace(press, compression_ratio=compression_ratio)
        object.__setattr__(self, "press", press)
        object.__setattr__(self, "unlisted", unlisted)
        object.__setattr__(self, "compression_ratio", float(press.compression_ratio))
        self.__post_init__()

    @property
    def press_name(self) -> str:
        cls = type(self.press).__name__
        return SUPPORTED.get(cls) or _snake(cls)

    @property
    def id(self) -> str:
        """``kvpress-<press>-<field><value>…``, e.g. ``kvpress-snapkv-r0.5-window_size64-kernel_size5``."""
        parts = [self.name, self.press_name]
        for k, v in press_params(self.press).items():
            parts.append(f"{'r' if k == 'compression_ratio' else k}{format_value(v)}")
        return "-".join(parts)

    def params(self) -> dict:
        return {"press": type(self.press).__name__, **press_params(self.press)}

    def describe(self) -> str:
        return f"kvpress({self.press!r})"

    def __eq__(self, other):
        return isinstance(other, KvpressMethod) and self.id == other.id

    def __hash__(self):
        return hash(self.id)

    def _module(self, layer_idx: int, n_layers: int, q_heads: int, kv_heads: int, head_dim: int):
        """The stand-in attention module the press reads head counts and the layer index from."""
        config = SimpleNamespace(num_attention_heads=q_heads, num_key_value_heads=kv_heads,
                                 num_hidden_layers=n_layers, head_dim=head_dim)
        return SimpleNamespace(config=config, head_dim=head_dim, layer_idx=layer_idx,
                               num_key_value_groups=q_heads // kv_heads, q_proj=lambda x: x)

    def budget(self, n_tokens: int, layer_idx: int, n_layers: int) -> int:
        """kvpress's count: ``compute_n_kept`` (``max(1, int(n × (1 − ratio)))``), or PyramidKVPress's
        per-layer ``get_layer_budget``; ratio 0 keeps everything, as kvpress's ``compress`` does."""
        if self.compression_ratio == 0 or n_tokens == 0:
            return n_tokens
        if hasattr(self.press, "get_layer_budget"):
            return min(n_tokens, int(self.press.get_layer_budget(
                self._module(layer_idx, n_layers, 1, 1, 1), n_tokens)))
        from kvpress.utils import compute_n_kept

        return min(n_tokens, compute_n_kept(n_tokens, self.compression_ratio))

    def score(self, inputs: ScoreInputs) -> torch.Tensor:
        b, hk, t, d = inputs.keys.shape
        hq = inputs.queries.shape[1]
        out = torch.full((b, hk, t), float("-inf"), dtype=torch.float32, device=inputs.keys.device)
        if self.compression_ratio == 0:
            return out.masked_fill(inputs.valid[:, None, :], 0.0)
        module = self._module(inputs.layer_idx, inputs.n_layers, hq, hk, d)
        for i in range(b):
            n = int(inputs.valid[i].sum())
            if n == 0:
                continue
            if not bool(inputs.valid[i, t - n:].all()):
                raise KvcheckError("KvpressMethod expects left-padded prompts (real tokens at the end of each row).")
            q = inputs.queries[i:i + 1, :, t - n:]
            hidden = q.transpose(1, 2).reshape(1, n, hq * d)  # get_prerope_query_states undoes this layout
            ones = torch.ones(1, n, d, dtype=q.dtype, device=q.device)
            kwargs = {"position_embeddings": (ones, torch.zeros_like(ones)),
                      "cache_position": torch.arange(n, device=q.device), "attention_mask": None}
            try:
                s = self.press.score(module, hidden, inputs.keys[i:i + 1, :, t - n:],
                                     inputs.values[i:i + 1, :, t - n:], None, kwargs)
            except AssertionError as exc:  # kvpress states its preconditions as assertions
                raise KvcheckError(f"{type(self.press).__name__} refused a {n}-token prompt: {exc}") from exc
            out[i, :, t - n:] = s[0].float()
        return out


def kept_positions(kept_keys: torch.Tensor, all_keys: torch.Tensor, sort: bool = True) -> torch.Tensor:
    """Which positions a compressed cache kept: each kept key row matched to its row in the full keys.

    kept_keys ``[kv_heads, n, head_dim]``, all_keys ``[kv_heads, t, head_dim]`` (one sample, one layer) →
    ``[kv_heads, n]`` positions (sorted, or in slot order with ``sort=False``). For reading kvpress's
    kept set off its own cache (kvpress's ``compress`` stores kept slots in ``topk`` order: by score,
    not by position). Raises if a row matches no full key.
    """
    dist = torch.cdist(kept_keys.double(), all_keys.double(), compute_mode="donot_use_mm_for_euclid_dist")  # [h, n, t]
    best = dist.min(dim=-1)
    scale = all_keys.double().norm(dim=-1).mean()
    if bool((best.values > 1e-5 * scale).any()):
        raise KvcheckError("a kept key matches no key of the full cache: the two runs did not see the same prompt.")
    return best.indices.sort(dim=-1).values if sort else best.indices
