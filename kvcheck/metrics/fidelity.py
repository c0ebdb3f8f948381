"""Numerical fidelity of a compressed cache against the full cache, teacher-forced (pure functions).

All take per-sample tensors aligned position by position: logits ``[L, vocab]`` predicting the same
continuation tokens ``[L]``, attention outputs ``[L, heads, head_dim]`` per layer.
"""
from __future__ import annotations

import math

import torch


def kl_divergence(ref_logits: torch.Tensor, logits: torch.Tensor) -> float:
    """Mean over positions of KL(p_full ‖ p_method) of the next-token distributions, in nats."""
    p = torch.log_softmax(ref_logits.double(), dim=-1)
    q = torch.log_softmax(logits.double(), dim=-1)
    return float((p.exp() * (p - q)).sum(dim=-1).mean())


def top1_agreement(ref_logits: torch.Tensor, logits: torch.Tensor) -> float:
    """Share of positions where the method's argmax token equals the full cache's."""
    return float((ref_logits.argmax(-1) == logits.argmax(-1)).double().mean())


def nll(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """Mean negative log-likelihood of ``targets`` (nats per token)."""
    return float(torch.nn.functional.cross_entropy(logits.double(), targets.long(), reduction="mean"))


def perplexity_ratio(ref_nll: float, method_nll: float) -> float:
    """ppl_method / ppl_full = exp(nll_method − nll_full); 1.0 means no loss."""
    return math.exp(method_nll - ref_nll)


def relative_error(ref: torch.Tensor, out: torch.Tensor) -> float:
    """‖out − ref‖ / ‖ref‖ (Frobenius), e.g. of one layer's attention output."""
    denom = float(torch.linalg.vector_norm(ref.double()))
    return float(torch.linalg.vector_norm((out - ref).double())) / max(denom, 1e-12)


def layer_errors(ref_layers: list[torch.Tensor], layers: list[torch.Tensor]) -> list[float]:
    return [relative_error(r, o) for r, o in zip(ref_layers, layers)]


def match_length(tokens: torch.Tensor, logits: torch.Tensor) -> int:
    """How many of the reference's greedy ``tokens`` ``[L]`` a method's logits along that trajectory
    ``[L, vocab]`` reproduce before the first divergence: the position where its own greedy output
    would first differ (``L`` when it never does)."""
    differs = (logits.argmax(-1).cpu() != tokens.cpu()).nonzero()
    return int(differs[0, 0]) if len(differs) else int(tokens.shape[0])
