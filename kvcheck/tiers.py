"""How much each suite runs per tier. ``ci`` is the default and what CI runs."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Tier:
    name: str
    accuracy: tuple  # (task, prompt tokens, samples) per entry
    fidelity_texts: int  # teacher-forced texts
    fidelity_prompt: int  # prompt tokens before the scored continuation
    fidelity_continuation: int  # scored continuation tokens
    drift_prompts: int
    drift_cap: int  # max new tokens for open-ended prompts
    throughput_grid: tuple  # (batch, prompt tokens) points
    repeats: int  # timed repeats per point (median taken)
    batch_size: int = 8
    drift_batch: int = 8  # open-ended prompts per batch


TIERS = {
    "smoke": Tier("smoke", accuracy=(("passkey", 256, 4),), fidelity_texts=2, fidelity_prompt=192,
                  fidelity_continuation=16, drift_prompts=4, drift_cap=64, throughput_grid=((1, 256),),
                  repeats=3),
    "ci": Tier("ci", accuracy=(("passkey", 512, 8), ("passkey", 1024, 8), ("kv_retrieval", 512, 8)),
               fidelity_texts=4, fidelity_prompt=384, fidelity_continuation=32, drift_prompts=32, drift_cap=64,
               throughput_grid=((1, 512),), repeats=3, drift_batch=32),
    "full": Tier("full", accuracy=(("passkey", 1024, 32), ("passkey", 2048, 32), ("kv_retrieval", 1024, 32),
                                   ("multikey", 1024, 32), ("variable_tracking", 1024, 32), ("fewshot", 1024, 32)),
                 fidelity_texts=16, fidelity_prompt=1024, fidelity_continuation=64, drift_prompts=64,
                 drift_cap=128, drift_batch=32, throughput_grid=((1, 1024), (1, 2048), (4, 1024), (8, 512)), repeats=7),
}
