"""How many tokens an eviction method keeps of a prompt: kvcheck's rule or kvpress's.

- ``"kvcheck"`` (:func:`kvcheck.methods.base.keep_count`): ``n − int(n·r)``, the evicted count
  rounded down.
- ``"kvpress"`` (kvpress 0.5.5 ``utils.compute_n_kept``, used by ``ScorerPress.compress`` and
  ``BlockPress``): ``max(1, int(n·(1 − r)))``, the kept count rounded down; ratio 0 keeps every
  token (``compress`` returns early).

They differ by one token whenever ``n·r`` is not an integer (n = 1001, r = 0.5: kvpress keeps 500,
kvcheck 501), and through float error too (n = 100, r = 0.29: ``100·0.29 = 28.999…``, so kvcheck
keeps 72 and kvpress 71). They agree exactly where ``int(n·(1 − r)) == n − int(n·r)``, e.g.
n = 512, r ∈ {0.25, 0.5, 0.75}.
"""
from __future__ import annotations

from ..errors import KvcheckError
from .base import keep_count

COUNT_RULES = ("kvcheck", "kvpress")


def kvpress_keep_count(n_tokens: int, ratio: float) -> int:
    """kvpress's ``compute_n_kept``: ``max(1, int(n × (1 − ratio)))``; ratio 0 (or no tokens) keeps all."""
    if ratio == 0 or n_tokens == 0:
        return n_tokens
    return min(n_tokens, max(1, int(n_tokens * (1 - ratio))))


def counted(rule: str, n_tokens: int, ratio: float) -> int:
    """Tokens kept of ``n_tokens`` at ``ratio`` by ``rule`` (one of :data:`COUNT_RULES`)."""
    return kvpress_keep_count(n_tokens, ratio) if rule == "kvpress" else keep_count(n_tokens, ratio)


def check_count_rule(rule, who: str) -> None:
    if rule not in COUNT_RULES:
        raise KvcheckError(f"{who}: count must be one of {COUNT_RULES} (whose rule sets the kept count), "
                           f"got {rule!r}.")
