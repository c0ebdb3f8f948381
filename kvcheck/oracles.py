"""What a compressed cache layer must equal, computed independently of it: the reference side of the
property tests (``suites/test_properties*.py``). Pure functions of a method's stated rule and of the
inputs; each docstring states the exact form checked. Methods are read through their capabilities and
what they state (``promises()``, ``stated_nbytes()``, ``Packed.error_bound``), never by class."""
from __future__ import annotations

import math

import torch

from . import quant
from .layer_api import Packed
from .quant import per_entry  # noqa: F401  (the oracles' name for it)

SLACK = quant.SLACK  # float32 rounding allowance, relative to the magnitudes involved


# The shipped eviction methods' documented rules, stated here apart from their code, so that a wrong
# flag or another budget cannot agree with itself: whether the method evicts back to its budget while
# generating, and how a layer's budget is set ("ratio": kvcheck's n − int(n·r) on every layer, or
# kvpress's max(1, int(n·(1 − r))) where the method's ``count`` is "kvpress";
# "pyramid": PyramidKV's arithmetic split of the same total, see pyramid_budgets). A method not listed
# here (your own) is read through its capabilities and ``budget()``: nothing else states its rule.
DOCUMENTED = {
    "streaming_llm": (True, "ratio"), "h2o": (True, "ratio"), "tova": (True, "ratio"),
    "snapkv": (False, "ratio"), "knorm": (False, "ratio"), "random": (False, "ratio"),
    "pyramidkv": (False, "pyramid"),
    "expected_attention": (False, "ratio"), "keydiff": (False, "ratio"),
}


def evicts_on_decode(method) -> bool:
    """Whether ``method`` evicts back to its budget while generating: its documented rule when it is a
    shipped method, else what its capabilities say."""
    doc = DOCUMENTED.get(method.name)
    return doc[0] if doc else method.capabilities.evicts_on_decode


def pyramid_budgets(n: int, ratio: float, window: int, beta: int, n_layers: int) -> list[int]:
    """PyramidKV's per-layer budgets of an n-token prompt, from the paper's rule: the total
    T = n − int(n·r) per layer on average; every layer keeps the observation window w = min(window, T);
    the rest, A = T − w per layer on average, is an arithmetic sequence from layer 0 (most) down to
    the last layer (least), the least being max(A // beta, 2A − (n − w)) (never more than a layer can
    hold), rounded down per layer with the remainder given one token each to layers 1, 2, …, so the
    layers together keep exactly L·T."""
    total = n - int(n * ratio)
    w = min(window, total)
    a = total - w
    if n_layers < 2 or a == 0:
        return [total] * n_layers
    least = max(a // beta, 2 * a - (n - w))
    most = 2 * a - least
    exact = [most - (most - least) * l / (n_layers - 1) for l in range(n_layers)]
    base = [int(math.floor(x + 1e-9)) for x in exact]
    left = n_layers * a - sum(base)
    return [w + b + int(1 <= l <= left) for l, b in enumerate(base)]


def documented_budget(method, n: int, layer_idx: int, n_layers: int) -> int:
    """Tokens a layer of ``method`` keeps of ``n`` (per KV head) by its documented rule (see
    :data:`DOCUMENTED`); a method not listed there by its own ``budget()``."""
    doc = DOCUMENTED.get(method.name)
    if doc is None:
        return method.budget(n, layer_idx, n_layers)
    if doc[1] == "pyramid":
        return pyramid_budgets(n, method.compression_ratio, method.window, method.beta, n_layers)[layer_idx]
    r = method.compression_ratio
    if getattr(method, "count", "kvcheck") == "kvpress":  # kvpress's rule, offered as an option
        return n if r == 0 else max(1, int(n * (1 - r)))
    return n - int(n * r)


def expected_counts(sc) -> list[int]:
    """Tokens each sample of a :class:`kvcheck.scenarios.Scenario` holds per KV head at the end:
    eviction keeps the documented budget of an n-token prompt (:func:`documented_budget`); new
    tokens join, and methods that evict while generating (:func:`evicts_on_decode`) evict back to
    the budget of all tokens seen; full and quantised caches hold every token seen."""
    m, counts = sc.method, []
    caps = m.capabilities
    for n in sc.batch.lengths:
        if caps.kind != "eviction":
            counts.append(n + sum(step[0].shape[2] for step in sc.steps))
            continue
        held_n, seen = documented_budget(m, n, sc.layer_idx, sc.n_layers), n
        for step in sc.steps:
            c = step[0].shape[2]
            seen, held_n = seen + c, held_n + c
            if evicts_on_decode(m):
                held_n = min(held_n, documented_budget(m, seen, sc.layer_idx, sc.n_layers))
        counts.append(held_n)
    return counts


def broken_promises(method, kept: list[int], prompt: int, seen: int, prefill_budget: int) -> list[str]:
    """The tokens a method promises to keep (its ``promises()``, a :class:`kvcheck.layer_api.KeepPromise`)
    that ``kept`` (true positions) lacks. A promise binds once the budget can hold it (budgets never
    shrink while generating, and an evicted token never returns):

    - ``sinks``: the prompt's first ``min(sinks, prompt)`` tokens, when the prompt's budget holds them;
      with ``exact``, when the prompt holds all its sinks, exactly those + the newest tokens;
    - ``recent``: the ``min(recent, held)`` newest tokens seen;
    - ``window`` on a prefill-only method (SnapKV's observation window): the last ``min(window,
      prompt)`` prompt tokens when the budget holds them, else every kept prompt token lies in them.
    """
    have, n, out = set(kept), len(kept), []
    promise = method.promises()
    if promise.sinks is not None:
        s = min(promise.sinks, prompt)
        if prefill_budget >= s and not set(range(s)) <= have:
            out.append(f"sinks 0..{s - 1} not all kept: {kept}")
        elif (prefill_budget >= s and promise.exact and s == promise.sinks
              and have != set(range(s)) | set(range(seen - (n - s), seen))):
            out.append(f"not the {s} sinks + the {n - s} newest tokens: {kept}")
    if promise.recent is not None:
        r = min(promise.recent, n)
        if not set(range(seen - r, seen)) <= have:
            out.append(f"recent window {seen - r}..{seen - 1} not all kept: {kept}")
    if promise.window is not None and not evicts_on_decode(method):
        w = min(promise.window, prompt)
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
    :class:`kvcheck.strategies.CacheShape`), by the layout the method states (``stated_nbytes``);
    None: a method that states none.

    The built-in statements: full, keys + values of every padded slot; eviction, keys + values of
    ``width`` slots per (sample, head), width = the largest per-sample budget, plus float32 per-slot
    state; quantised methods, ``max(0, t − residual)`` slots quantised (t the padded length), the rest
    full precision, with kivi: bits/8 bytes per code, fp16 (scale, zero) per group of ``group_size``
    tokens (keys, per channel) and per group of channels (values); int: head_dim × bits/8 + 4 ×
    head_dim/group per token, head and tensor; fp8: head_dim + 2.
    """
    return method.stated_nbytes(shape, lengths, layer_idx, n_layers, elt)


def round_trip_bound(packed, x: torch.Tensor) -> torch.Tensor | None:
    """The largest ``|dq(q(x)) − x|`` each entry may show, as the packed tensor states it
    (``Packed.error_bound``; None: a packed tensor that states none).

    Integer codecs (:class:`kvcheck.quant.QTensor`): half of the group's stored step,
    ``scale/2 + 2⁻²⁰·(|x| + |zero| + scale)`` (the second term is float32 rounding). fp8 (e4m3, 3
    mantissa bits, per-token scale s): ``2⁻⁴·|x| + 2⁻¹⁰·s + 2⁻²⁰·|x|`` (half an e4m3 ulp of x/s, half
    the subnormal spacing 2⁻⁹, float32 rounding)."""
    if not isinstance(packed, Packed):
        return None
    return packed.error_bound(x)


# The shipped codecs' documented grids, stated apart from their code (as DOCUMENTED is for eviction), so a
# grid coarser than stated cannot agree with itself: per method name, per tensor, the axis a group runs
# along (2 tokens, 3 channels) and its size, from the method and head_dim; groups are aligned to the
# axis' end and their range is taken over real entries only. fp8 is per token and head, relative.
INT_GRIDS = {
    "int": lambda m, tensor, d: (3, min(m.group_size, d)),
    "kivi": lambda m, tensor, d: ((2, m.group_size) if tensor == "keys"
                                  else (3, m.group_size if d % m.group_size == 0 and m.group_size <= d else d)),
}
FP16_ULP = 2.0 ** -10  # float16's relative spacing: a stored zero or scale is rounded outward by at most this
FP16_TINY = 2.0 ** -24  # float16's smallest step


def _group_range(x: torch.Tensor, real: torch.Tensor, axis: int, group: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per entry of ``x``, the min and max over the real entries of its group (groups of ``group`` along
    ``axis``, aligned to the axis' end; a group with no real entry gets 0, 0)."""
    x, real = x.movedim(axis, -1).double(), real.movedim(axis, -1)
    n = x.shape[-1]
    pad = (-n) % group
    x = torch.nn.functional.pad(x, (pad, 0))
    real = torch.nn.functional.pad(real, (pad, 0), value=False)
    g = x.unflatten(-1, (-1, group))
    r = real.unflatten(-1, (-1, group))
    lo = g.masked_fill(~r, float("inf")).amin(-1, keepdim=True)
    hi = g.masked_fill(~r, float("-inf")).amax(-1, keepdim=True)
    empty = ~r.any(-1, keepdim=True)
    lo, hi = lo.masked_fill(empty, 0.0), hi.masked_fill(empty, 0.0)
    spread = lambda t: t.expand_as(g).flatten(-2)[..., pad:].movedim(-1, axis)  # noqa: E731
    return spread(lo), spread(hi)


def stated_round_trip_bound(method, x: torch.Tensor, valid: torch.Tensor, tensor: str) -> torch.Tensor | None:
    """The largest ``|dq(q(x)) − x|`` each entry of ``x`` (``[b, kv_heads, n, d]``, ``valid [b, n]``) may
    show by the method's documented grid and the data's own range, never the codec's stored scales:

    - integer codecs (:data:`INT_GRIDS`, ``bits``): a group over real entries [lo, hi] gets the step
      (hi − lo)/(2^bits − 1); the stored zero and step may each sit one float16 step outward, so
      ``½·((hi − lo + 2⁻¹⁰·|lo| + 2⁻²⁴)/(2^bits − 1)·(1 + 2⁻¹⁰) + 2⁻²⁴) + 2⁻²⁰·(|x| + |lo| + |hi|)``;
    - fp8 (e4m3, per token and head, scale s = absmax/448 rounded up to float16):
      ``2⁻⁴·|x| + 2⁻¹⁰·max(s·(1 + 2⁻¹⁰), 2⁻²⁴) + 2⁻²⁰·|x|``;
    - vLLM's int8_per_token_head (symmetric, s = max(absmax/127, 10⁻⁶) in float32): ``s/2`` and
      fp8_per_token_head (e4m3 at s = max(absmax/448, 10⁻⁶)): ``2⁻⁴·|x| + 2⁻¹⁰·s``, each with float32
      rounding.

    None for a method whose grid is not documented here (your own: its packed tensor's
    ``error_bound`` is all that states it)."""
    real = valid[:, None, :, None].expand_as(x)
    xa = x.double().abs()
    absmax = xa.masked_fill(~real, 0.0).amax(-1, keepdim=True)  # per token and head, real tokens
    if method.name == "int8_per_token_head":  # vLLM: symmetric, s = max(absmax/127, 1e-6) in float32
        s = (absmax / 127.0).clamp_min(1e-6) * (1 + 2.0 ** -22)
        return s / 2 + SLACK * (xa + s)
    if method.name == "fp8_per_token_head":  # vLLM: e4m3 at s = max(absmax/448, 1e-6) in float32
        s = (absmax / 448.0).clamp_min(1e-6) * (1 + 2.0 ** -22)
        return 2.0 ** -4 * xa + 2.0 ** -10 * s + SLACK * xa
    if method.name == "fp8":
        s = absmax / 448.0
        return 2.0 ** -4 * xa + 2.0 ** -10 * (s * (1 + FP16_ULP)).clamp_min(FP16_TINY) + SLACK * xa
    rule = INT_GRIDS.get(method.name)
    if rule is None or not hasattr(method, "bits"):
        return None
    axis, group = rule(method, tensor, x.shape[-1])
    lo, hi = _group_range(x, real, axis, group)
    levels = (1 << method.bits) - 1
    step = (hi - lo + FP16_ULP * lo.abs() + FP16_TINY) / levels * (1 + FP16_ULP) + FP16_TINY
    return step / 2 + SLACK * (xa + lo.abs() + hi.abs())
