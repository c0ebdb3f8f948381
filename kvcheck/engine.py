"""Batched greedy generation and teacher-forced scoring through a CompressedCache.

Prompts are left-padded; positions are explicit (``cumsum(mask) - 1`` at prefill, true length + step
while decoding), so eviction never shifts RoPE positions. Timing synchronises the device.
"""
from __future__ import annotations

import inspect
import time
from dataclasses import asdict, dataclass, field

import torch

from .attention import give_rope, sync  # noqa: F401  (engine.sync: the benchmarks call it)
from .cache import CompressedCache, full_kv_bytes, kv_ratio
from .layer_api import CACHE_KWARG
from .errors import KvcheckError
from .tasks.base import Sample, chat_ids


@dataclass
class Record:
    """One sample's run through one method."""

    id: str
    prompt_tokens: int
    output_ids: list[int]
    output_text: str
    output_tokens: int
    hit_eos: bool
    prefill_s: float
    decode_s: list[float] = field(default_factory=list)  # per generated token (batch step)
    kv_bytes_prefill: int = 0  # this sample's share of the bytes held after prefill (real)
    kv_bytes_end: int = 0
    kv_ratio: float = 1.0  # bytes held / full cache after prefill, floats counted as fp16
    kv_peak_ratio: float = 1.0  # the most bytes held at any step of the batch's generation / full's at its end
    score: float | None = None
    answer: str | None = None
    task: str | None = None
    task_type: str | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def encode(tokenizer, sample: Sample) -> list[int]:
    if not sample.prompt:
        raise KvcheckError(f"sample {sample.id!r} has an empty prompt; every sample needs prompt text.")
    if sample.chat:
        return chat_ids(tokenizer, sample.prompt)
    ids = tokenizer(sample.prompt, add_special_tokens=True)["input_ids"]
    return list(ids)


def left_pad(seqs: list[list[int]], pad_id: int, device, extra: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded ids and the valid mask; ``extra`` more pad columns (a benign perturbation: the same
    maths over a longer, masked row)."""
    t = max(len(s) for s in seqs) + extra
    ids = torch.full((len(seqs), t), pad_id, dtype=torch.long)
    valid = torch.zeros((len(seqs), t), dtype=torch.bool)
    for i, s in enumerate(seqs):
        ids[i, t - len(s):] = torch.tensor(s, dtype=torch.long)
        valid[i, t - len(s):] = True
    return ids.to(device), valid.to(device)


def _context_limit(model) -> int:
    return int(getattr(model.config, "max_position_embeddings", 0) or 0)


def check_length(model, n_prompt: int, n_new: int, sample_id: str) -> None:
    limit = _context_limit(model)
    if limit and n_prompt + n_new > limit:
        raise KvcheckError(f"sample {sample_id!r}: {n_prompt} prompt tokens + {n_new} new tokens exceed the "
                           f"model's context of {limit}; use a shorter --length or fewer new tokens.")


_CACHE_ARG: dict[type, str] = {}


def cache_arg(model) -> str:
    """The model's cache argument: ``cache`` (recent transformers) or ``past_key_values`` (5.2 and before)."""
    cls = type(model)
    if cls not in _CACHE_ARG:
        _CACHE_ARG[cls] = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    return _CACHE_ARG[cls]


def forward(model, ids, positions, valid, cache, logits_to_keep=1):
    cache.begin(positions, valid)
    out = model(input_ids=ids, position_ids=positions, use_cache=True, logits_to_keep=logits_to_keep,
                **{CACHE_KWARG: cache, cache_arg(model): cache})
    return out.logits


@dataclass
class Prefill:
    """A batch's prompt pass, captured once so every method can compress the same prefill.

    Prefill attention always sees the whole prompt (methods compress after each layer's attention),
    so the prompt pass is identical for every method: ``replay`` compresses copies of these tensors
    exactly as a live prefill would. keys/values ``[b, kv_heads, t, d]`` and queries ``[b, q_heads,
    t, d]`` per layer; ``first`` is the first generated token ``[b]``.
    """

    samples: list
    seqs: list
    ids: torch.Tensor
    valid: torch.Tensor
    positions: torch.Tensor
    first: torch.Tensor
    first_logits: torch.Tensor
    keys: list
    values: list
    queries: list
    scaling: float
    prefill_s: float


def _prepare(lm, samples: list[Sample], max_new_tokens: int, extra_pad: int = 0):
    seqs = [encode(lm.tokenizer, s) for s in samples]
    for s, q in zip(samples, seqs):
        check_length(lm.model, len(q), max_new_tokens, s.id)
    ids, valid = left_pad(seqs, lm.tokenizer.pad_token_id, lm.device, extra_pad)
    positions = (valid.long().cumsum(-1) - 1).clamp_min(0)
    return seqs, ids, valid, positions


@torch.inference_mode()
def capture_prefill(lm, samples: list[Sample], max_new_tokens: int, extra_pad: int = 0) -> Prefill:
    """Run the prompt pass once through the full cache, keeping every layer's queries, keys, values."""
    seqs, ids, valid, positions = _prepare(lm, samples, max_new_tokens, extra_pad)
    return _capture(lm, samples, seqs, ids, valid, positions)


def capture_tokens(lm, prompts: list[list[int]], extra_pad: int = 0) -> Prefill:
    """:func:`capture_prefill` for token-id prompts (teacher forcing)."""
    ids, valid = left_pad(prompts, lm.tokenizer.pad_token_id, lm.device, extra_pad)
    positions = (valid.long().cumsum(-1) - 1).clamp_min(0)
    return _capture(lm, [], prompts, ids, valid, positions)


@torch.inference_mode()
def _capture(lm, samples, seqs, ids, valid, positions) -> Prefill:
    from .methods.full import Full

    cache = CompressedCache(Full(), lm.model.config.num_hidden_layers)
    cache.captured_queries = {}
    sync(lm.device)
    t0 = time.perf_counter()
    logits = forward(lm.model, ids, positions, valid, cache)
    sync(lm.device)
    layers = cache.layers
    return Prefill(samples, seqs, ids, valid, positions, logits[:, -1].argmax(-1), logits[:, -1].float(),
                   [l.keys for l in layers], [l.values for l in layers],
                   [cache.captured_queries[i] for i in range(len(layers))],
                   lm.model.model.layers[0].self_attn.scaling, time.perf_counter() - t0)


def _attention_modules(lm) -> list:
    """Each decoder layer's attention module (``model.model.layers[i].self_attn``)."""
    return [block.self_attn for block in lm.model.model.layers]


def replay(lm, pre: Prefill, method) -> CompressedCache:
    """A cache for ``method`` holding what a live prefill of ``pre``'s prompts would leave."""
    cache = CompressedCache(method, lm.model.config.num_hidden_layers)
    pos, valid = pre.positions, pre.valid
    for layer, k, v, q, attn in zip(cache.layers, pre.keys, pre.values, pre.queries, _attention_modules(lm)):
        layer.update(k, v, pos, valid)
        give_rope(layer, attn)  # as kvcheck's attention function does before a live prefill compresses
        layer.after_forward(q, pre.scaling)
    return cache


@torch.inference_mode()
def generate_batch(lm, samples: list[Sample], method, max_new_tokens: int, eos_ids=None,
                   shared: Prefill | None = None) -> list[Record]:
    """Greedy generation for one batch. With ``shared``, the prompt pass is replayed from a capture
    (identical result, no second prefill); otherwise it runs live and is timed."""
    model, tok, dev = lm.model, lm.tokenizer, lm.device
    eos = set(eos_ids if eos_ids is not None else _eos_ids(lm))
    if shared is None:
        seqs, ids, valid, positions = _prepare(lm, samples, max_new_tokens)
        cache = CompressedCache(method, model.config.num_hidden_layers)
        sync(dev)
        t0 = time.perf_counter()
        nxt = forward(model, ids, positions, valid, cache)[:, -1].argmax(-1)
        sync(dev)
        prefill_s = time.perf_counter() - t0
    else:
        samples, seqs, ids, valid = shared.samples, shared.seqs, shared.ids, shared.valid
        cache, nxt, prefill_s = replay(lm, shared, method), shared.first, shared.prefill_s
    lengths = valid.sum(-1)
    b = len(samples)
    bytes_prefill = cache.kv_bytes()
    ratio = kv_ratio(cache, model.config, ids.shape[1], b)
    out = [[] for _ in range(b)]
    done = torch.zeros(b, dtype=torch.bool, device=dev)
    eos_t = torch.tensor(sorted(eos), device=dev)
    steps: list[float] = []
    peak = cache.kv_bytes(float_bytes=2)
    for step in range(max_new_tokens):
        for i, t in enumerate(nxt.tolist()):
            if not done[i]:
                out[i].append(t)
        done |= torch.isin(nxt, eos_t)
        if bool(done.all()) or step == max_new_tokens - 1:
            break
        t1 = time.perf_counter()
        pos = (lengths + step)[:, None]
        nxt = forward(model, nxt[:, None], pos, torch.ones_like(pos, dtype=torch.bool), cache)[:, -1].argmax(-1)
        sync(dev)
        steps.append(time.perf_counter() - t1)
        peak = max(peak, cache.kv_bytes(float_bytes=2))
    bytes_end = cache.kv_bytes()
    # full would hold every slot of the last step: prompt columns + one per decode forward
    peak_ratio = peak / full_kv_bytes(model.config, ids.shape[1] + len(steps), b)
    records = []
    for i, s in enumerate(samples):
        toks = out[i]
        hit = bool(toks) and toks[-1] in eos
        text = tok.decode(toks[:-1] if hit else toks, skip_special_tokens=True)
        records.append(Record(
            id=s.id, prompt_tokens=len(seqs[i]), output_ids=toks, output_text=text,
            output_tokens=len(toks), hit_eos=hit, prefill_s=prefill_s / b, decode_s=steps[:max(0, len(toks) - 1)],
            kv_bytes_prefill=bytes_prefill // b, kv_bytes_end=bytes_end // b, kv_ratio=ratio,
            kv_peak_ratio=peak_ratio,
            answer=s.answer, task=s.task, task_type=s.task_type))
    return records


def _eos_ids(lm) -> list[int]:
    ids = lm.model.generation_config.eos_token_id
    ids = [ids] if isinstance(ids, int) else list(ids or [])
    if lm.tokenizer.eos_token_id is not None:
        ids.append(lm.tokenizer.eos_token_id)
    return sorted(set(ids))


def generate(lm, samples: list[Sample], method, max_new_tokens: int = 16, batch_size: int = 4,
             progress=None, score=None) -> list[Record]:
    """Greedy generation for every sample; ``score(sample, text)`` fills ``Record.score`` if given."""
    if batch_size < 1:
        raise KvcheckError(f"batch size must be >= 1, got {batch_size}.")
    records: list[Record] = []
    for start in range(0, len(samples), batch_size):
        chunk = samples[start:start + batch_size]
        recs = generate_batch(lm, chunk, method, max_new_tokens)
        if score is not None:
            for s, r in zip(chunk, recs):
                r.score = float(score(s, r.output_text))
        records.extend(recs)
        if progress is not None:
            progress(len(chunk))
    return records


@dataclass
class ForcedResult:
    """Teacher-forced outputs for one sample: logits predicting each continuation token ``[L, vocab]``
    and, when recorded, each layer's attention output for the continuation queries ``[L, q_heads, d]``."""

    logits: torch.Tensor
    attention: list[torch.Tensor] | None


@torch.inference_mode()
def teacher_forced(lm, prompts: list[list[int]], continuations: list[list[int]], method,
                   record_attention: bool = False, shared: Prefill | None = None) -> list[ForcedResult]:
    """Prefill each prompt through ``method``'s cache, then feed its continuation in one forward.

    The continuation attends to the compressed prompt (what decoding would see); methods that also act
    while generating apply once after the chunk. ``shared`` replays a captured prompt pass of the same
    prompts (see :func:`capture_tokens`).
    """
    model, dev = lm.model, lm.device
    if any(len(c) == 0 for c in continuations):
        raise KvcheckError("every continuation needs at least one token.")
    if shared is None:
        ids, valid = left_pad(prompts, lm.tokenizer.pad_token_id, dev)
        positions = (valid.long().cumsum(-1) - 1).clamp_min(0)
        cache = CompressedCache(method, model.config.num_hidden_layers)
        first = forward(model, ids, positions, valid, cache)[:, -1]
    else:
        valid, cache, first = shared.valid, replay(lm, shared, method), shared.first_logits
    L = max(len(c) for c in continuations)
    cont = torch.full((len(prompts), L), lm.tokenizer.pad_token_id, dtype=torch.long)
    cvalid = torch.zeros((len(prompts), L), dtype=torch.bool)
    for i, c in enumerate(continuations):
        cont[i, :len(c)] = torch.tensor(c)
        cvalid[i, :len(c)] = True
    cont, cvalid = cont.to(dev), cvalid.to(dev)
    cpos = valid.sum(-1, keepdim=True) + torch.arange(L, device=dev)[None]
    cache.recorded = {} if record_attention else None
    rest = forward(model, cont, cpos, cvalid, cache, logits_to_keep=0)
    logits = torch.cat([first[:, None], rest[:, :-1]], dim=1).float()
    results = []
    for i, c in enumerate(continuations):
        att = None
        if record_attention:
            att = [cache.recorded[l][i, :len(c)].float() for l in sorted(cache.recorded)]
        results.append(ForcedResult(logits[i, :len(c)], att))
    return results


@torch.inference_mode()
def forced_decode(lm, pre: Prefill, method, tokens: torch.Tensor) -> torch.Tensor:
    """Decode-time teacher forcing: replay ``pre``'s prompt pass into ``method``'s cache, then feed
    ``tokens`` ``[b, L]`` one per forward, as a server generates, so compression while generating acts
    before later queries attend. Returns the logits predicting each of the ``L`` tokens ``[b, L, vocab]``
    (the first comes from the shared prompt pass)."""
    model, dev = lm.model, lm.device
    cache = replay(lm, pre, method)
    lengths = pre.valid.sum(-1)
    steps = [pre.first_logits]
    ones = torch.ones((tokens.shape[0], 1), dtype=torch.bool, device=dev)
    for s in range(tokens.shape[1] - 1):
        pos = (lengths + s)[:, None]
        steps.append(forward(model, tokens[:, s:s + 1].to(dev), pos, ones, cache)[:, -1].float())
    return torch.stack(steps, dim=1)


@torch.inference_mode()
def greedy_tokens(lm, pre: Prefill, method, n: int) -> torch.Tensor:
    """``method``'s greedy continuation of ``pre``'s prompts, exactly ``n`` tokens each (EOS does not
    stop it) ``[b, n]``."""
    cache = replay(lm, pre, method)
    lengths = pre.valid.sum(-1)
    nxt, out = pre.first, [pre.first]
    ones = torch.ones((nxt.shape[0], 1), dtype=torch.bool, device=lm.device)
    for s in range(n - 1):
        nxt = forward(lm.model, nxt[:, None], (lengths + s)[:, None], ones, cache)[:, -1].argmax(-1)
        out.append(nxt)
    return torch.stack(out, dim=1).cpu()
