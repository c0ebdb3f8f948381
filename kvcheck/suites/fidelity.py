"""Numerical fidelity against the full cache, teacher-forced on fixed texts: next-token KL
divergence, top-1 agreement, perplexity ratio, and the relative error of every layer's attention
output for the continuation (decode) queries — gated on its mean and worst layer."""
from .catalog import FIDELITY


def test_fidelity(kv_method, kv_gate):
    kv_gate.run(FIDELITY, kv_method)
