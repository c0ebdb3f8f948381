"""What a compressed cache layer must equal, computed independently of it: the reference side of the
property tests (``suites/test_properties*.py``). Pure functions of a method's stated rule and of the
inputs; each docstring states the exact form checked."""
from __future__ import annotations

import math

import torch

from . import quant
from .methods import FP8, KIVI, EvictionMethod, Full, IntQuant, QuantMethod, StreamingLLM
from .methods.fp8 import FP8Tensor

SLACK = 2.0 ** -20  # float32 rounding allowance, relative to the magnitudes involved


def expected_counts(sc) -> list[int]:
    """Tokens each sample of a :class:`kvcheck.scenarios.Scenario` holds per KV head at the end:
    eviction keeps ``budget(n)`` of an n-token prompt; new tokens join, and ``acts_on_decode``
    methods evict back to ``budget(seen)``; full and quantised caches hold every token seen."""
    m, counts = sc.method, []
    for n in sc.batch.lengths:
        if not isinstance(m, EvictionMethod):
            counts.append(n + sum(step[0].shape[2] for step in sc.steps))
            continue
        held_n, seen = m.budget(n, sc.layer_idx, sc.n_layers), n
        for step in sc.steps:
            c = step[0].shape[2]
            seen, held_n = seen + c, held_n + c
            if m.acts_on_decode:
                held_n = min(held_n, m.budget(seen, sc.layer_idx, sc.n_layers))
        counts.append(held_n)
    return counts


def broken_promises(method, kept: list[int], prompt: int, seen: int, prefill_budget: int) -> list[str]:
    """The tokens a method promises to keep, by attribute, that ``kept`` (true positions) lacks. A
    promise binds once the budget can hold it (budgets never shrink while generating, and an evicted
    token never returns):

    - ``sinks``: the prompt's first ``min(sinks, prompt)`` tokens, when the prompt's budget holds them;
      StreamingLLM, when the prompt holds all its sinks, keeps exactly those + the newest tokens;
    - ``recent``: the ``min(recent, held)`` newest tokens seen;
    - ``window`` on a prefill-only method (SnapKV's observation window): the last ``min(window,
      prompt)`` prompt tokens when the budget holds them, else every kept prompt token lies in them.
    """
    have, n, out = set(kept), len(kept), []
    if isinstance(getattr(method, "sinks", None), int):
        s = min(method.sinks, prompt)
        if prefill_budget >= s and not set(range(s)) <= have:
            out.append(f"sinks 0..{s - 1} not all kept: {kept}")
        elif (prefill_budget >= s and isinstance(method, StreamingLLM) and s == method.sinks
              and have != set(range(s)) | set(range(seen - (n - s), seen))):
            out.append(f"not the {s} sinks + the {n - s} newest tokens: {kept}")
    if isinstance(getattr(method, "recent", None), int):
        r = min(method.recent, n)
        if not set(range(seen - r, seen)) <= have:
            out.append(f"recent window {seen - r}..{seen - 1} not all kept: {kept}")
    if isinstance(getattr(method, "window", None), int) and not method.acts_on_decode:
        w = min(method.window, prompt)
        window, from_prompt = set(range(prompt - w, prompt)), {p for p in have if p < prompt}
        if prefill_budget >= w and not window <= from_prompt:
            out.append(f"observation window {prompt - w}..{prompt - 1} not all kept: {kept}")
        elif prefill_budget < w and not from_prompt <= window:
            out.append(f"budget {prefill_budget} < window {w}, yet kept outside it: {kept}")
    return out


def exact_attention(call) -> torch.Tensor:
    """Softmax attention by hand in float64 over a :class:`kvcheck.scenarios.Call`'s held slots: query
    head j reads KV head j // groups and sees the slots that are valid and at or before its position.
    → ``[b, c, hq, d]``."""
    g = call.q.shape[1] // call.keys.shape[1]
    k, v = call.keys.double().repeat_interleave(g, 1), call.values.double().repeat_interleave(g, 1)
    kv, kp = call.key_valid.repeat_interleave(g, 1), call.key_pos.repeat_interleave(g, 1)
    logits = call.q.double() @ k.transpose(-1, -2) * call.q.shape[-1] ** -0.5
    sees = kv[:, :, None, :] & (kp[:, :, None, :] <= call.q_pos[:, None, :, None])
    weights = torch.softmax(logits.masked_fill(~sees, float("-inf")), dim=-1)
    return (weights @ v).transpose(1, 2)


def rounding_tolerance(call) -> float:
    """How far float32 attention may sit from the float64 one: logits carry a relative error of about
    head_dim × 2⁻²⁴ of Σ|q||k| (8× that allowed), which moves the weights by as much and the output by
    that × max|v|; plus 1e-5 × max|v| for the weighted sum and 1e-6 absolute."""
    g = call.q.shape[1] // call.keys.shape[1]
    d = call.q.shape[-1]
    worst = float((call.q.abs().double() @ call.keys.abs().double().repeat_interleave(g, 1)
                   .transpose(-1, -2)).max()) * d ** -0.5 if call.keys.numel() else 0.0
    vmax = float(call.values.abs().max()) if call.values.numel() else 0.0
    return vmax * (worst * d * 2.0 ** -21 + 1e-5) + 1e-6


def mismatch(got: torch.Tensor, want: torch.Tensor, atol: float, rtol: float = 0.0) -> str | None:
    """None when ``|got − want| ≤ atol + rtol·|want|`` everywhere, else a one-line summary."""
    over = (got.double() - want.double()).abs() - (atol + rtol * want.double().abs())
    if not bool((over > 0).any()):
        return None
    i = int(over.flatten().argmax())
    return (f"{int((over > 0).sum())} of {over.numel()} entries off by more than atol {atol:.3g} + rtol {rtol:g}; "
            f"worst: got {float(got.flatten()[i]):.6g}, want {float(want.flatten()[i]):.6g}")


def expected_bytes(method, shape, lengths: list[int], layer_idx: int, n_layers: int, elt: int) -> int | None:
    """Bytes one layer holds after prefill of a left-padded batch (``shape``: a
    :class:`kvcheck.strategies.CacheShape`), by the layout its class states (a subclass inherits it);
    None: a class with no formula here.

    Eviction: keys + values of ``width`` slots per (sample, head), width = the largest per-sample
    budget (the padded length for full), plus float32 running scores for stateful methods. Quantised
    methods: ``max(0, t − residual)`` slots quantised (t the padded length), the rest full precision;
    kivi: bits/8 bytes per code, fp16 (scale, zero) per group of ``group_size`` tokens (keys, per
    channel) and per group of channels (values); int: head_dim × bits/8 + 4 × head_dim/group per token,
    head and tensor; fp8: head_dim + 2.
    """
    b, h, t, d = shape.batch, shape.kv_heads, shape.seq, shape.head_dim
    if isinstance(method, Full):
        return 2 * b * h * t * d * elt
    if isinstance(method, EvictionMethod):
        width = max(method.budget(n, layer_idx, n_layers) for n in lengths)
        return 2 * b * h * width * d * elt + (b * h * width * 4 if method.stateful else 0)
    if not isinstance(method, QuantMethod):
        return None
    nq = t - method.residual if t > method.residual else 0
    full_precision = 2 * b * h * (t - nq) * d * elt
    if isinstance(method, KIVI):
        g = method.group_size
        gv = g if d % g == 0 and g <= d else d
        return (full_precision + 2 * b * h * nq * d * method.bits // 8 + 4 * b * h * d * math.ceil(nq / g)
                + 4 * b * h * nq * (d // gv))
    if isinstance(method, IntQuant):
        return full_precision + 2 * b * h * nq * (d * method.bits // 8 + 4 * d // min(method.group_size, d))
    if isinstance(method, FP8):
        return full_precision + 2 * b * h * nq * (d + 2)
    return None


def per_entry(t: torch.Tensor, q: quant.QTensor) -> torch.Tensor:
    """A per-group tensor of ``q`` (scale or zero) spread to every entry, in the unpacked layout."""
    return t.float().repeat_interleave(q.group_size, dim=-1)[..., q.lead_pad:].movedim(-1, q.axis)


def round_trip_bound(packed, x: torch.Tensor) -> torch.Tensor | None:
    """The largest ``|dq(q(x)) − x|`` each entry may show (None: a codec this module does not know).

    Integer codecs (:class:`kvcheck.quant.QTensor`): half of the group's stored step,
    ``scale/2 + 2⁻²⁰·(|x| + |zero| + scale)`` (the second term is float32 rounding). fp8 (e4m3, 3
    mantissa bits, per-token scale s): ``2⁻⁴·|x| + 2⁻¹⁰·s + 2⁻²⁰·|x|`` (half an e4m3 ulp of x/s, half
    the subnormal spacing 2⁻⁹, float32 rounding)."""
    if isinstance(packed, quant.QTensor):
        scale, zero = per_entry(packed.scale, packed), per_entry(packed.zero, packed)
        return scale / 2 + SLACK * (x.abs() + zero.abs() + scale)
    if isinstance(packed, FP8Tensor):
        return 2.0 ** -4 * x.abs() + 2.0 ** -10 * packed.scale.float() + SLACK * x.abs()
    return None
