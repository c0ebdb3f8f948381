"""Decode step time of methods as a ratio to ``full`` at long contexts, without paying for the prefill.

Each layer's cache is filled the way a replayed prefill fills it (``update`` then ``after_forward``, so
eviction scores, H2O's running state and KIVI's blocks are all real), from seeded random keys, values
and queries of the prompt's shape; then every cache takes greedy decode steps through the model, full
and the methods in turn (A/B interleaved), and the median step time of each is compared with full's.

    python benchmarks/decode_step.py --method streaming_llm:compression_ratio=0.5 --method kivi:bits=2 \\
        --batch 1,4 --length 2048,4096 --steps 16 --threads 1 --clock cpu

``--arch`` times a random-weight architecture from bench_arch.py instead of the default model.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


def filled_cache(lm, method, batch: int, length: int, seed: int = 0):
    """A cache for ``method`` holding what a prefill of ``length`` random tokens' keys/values leaves."""
    from kvcheck import engine
    from kvcheck.cache import CompressedCache

    cfg = lm.model.config
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    attn = lm.model.model.layers[0].self_attn
    g = torch.Generator().manual_seed(seed)
    shape_kv = (batch, cfg.num_key_value_heads, length, head_dim)
    shape_q = (batch, cfg.num_attention_heads, length, head_dim)
    cache = CompressedCache(method, cfg.num_hidden_layers)
    positions = torch.arange(length)[None].expand(batch, length).to(lm.device)
    valid = torch.ones(batch, length, dtype=torch.bool, device=lm.device)
    cache.begin(positions, valid)
    for layer in cache.layers:
        k, v, q = (torch.randn(s, generator=g).to(lm.device, lm.dtype) for s in (shape_kv, shape_kv, shape_q))
        layer.update(k, v, positions, valid)
        engine.give_rope(layer, attn)  # as a live prefill does: rules reading pre-RoPE queries need it
        layer.after_forward(q, attn.scaling)
    return cache


@torch.inference_mode()
def measure(lm, methods, batch: int, length: int, steps: int, warmup: int = 2,
            clock=time.perf_counter) -> dict[str, list[float]]:
    from kvcheck import engine
    from kvcheck.methods import Full

    everyone = [Full()] + list(methods)
    caches = [filled_cache(lm, m, batch, length) for m in everyone]
    g = torch.Generator().manual_seed(1)
    vocab = lm.model.config.vocab_size
    tokens = torch.randint(100, min(vocab, 30000), (warmup + steps, batch), generator=g).to(lm.device)
    one = torch.ones(batch, 1, dtype=torch.bool, device=lm.device)
    times: dict[str, list[float]] = {m.id: [] for m in everyone}
    for step in range(warmup + steps):
        pos = torch.full((batch, 1), length + step, device=lm.device)
        order = range(len(everyone)) if step % 2 == 0 else reversed(range(len(everyone)))
        for i in order:
            engine.sync(lm.device)
            t0 = clock()
            engine.forward(lm.model, tokens[step][:, None], pos, one, caches[i])
            engine.sync(lm.device)
            if step >= warmup:
                times[everyone[i].id].append(clock() - t0)
    return times


def main(argv=None) -> int:
    from kvcheck.build import parse_method_spec

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--method", action="append", required=True)
    p.add_argument("--batch", default="1")
    p.add_argument("--length", default="2048")
    p.add_argument("--steps", type=int, default=16)
    p.add_argument("--arch", help="a random-weight architecture from bench_arch.py (default: the default model)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int)
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="cpu: process CPU time (CPU runs on a shared machine, with --threads 1)")
    p.add_argument("--json")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.arch:
        sys.path.insert(0, str(HERE))
        from bench_arch import build

        lm = build(a.arch, a.device, torch.bfloat16 if a.device.startswith("cuda") else torch.float32)
    else:
        from kvcheck.model import load_model

        lm = load_model(None, a.device)
    methods = [parse_method_spec(m) for m in a.method]
    if a.clock == "cpu" and lm.device.type != "cpu":
        p.error("--clock cpu times CPU runs only")
    clock = time.process_time if a.clock == "cpu" else time.perf_counter
    print(f"model={lm.name} device={lm.device} threads={torch.get_num_threads()} clock={a.clock}", flush=True)
    print(f"{'method':40s} {'b':>3s} {'len':>6s} {'decode×':>8s} {'spread':>7s} {'full ms':>8s}", flush=True)
    rows = []
    for b in (int(x) for x in a.batch.split(",")):
        for n in (int(x) for x in a.length.split(",")):
            times = measure(lm, methods, b, n, a.steps, clock=clock)
            full = statistics.median(times["full"])
            for m in methods:
                xs = times[m.id]
                med = statistics.median(xs)
                row = {"method": m.id, "batch": b, "length": n, "decode_ratio": med / full,
                       "spread": (max(xs) - min(xs)) / med, "full_step_s": full, "step_s": med}
                rows.append(row)
                print(f"{m.id[:40]:40s} {b:3d} {n:6d} {row['decode_ratio']:8.3f} {row['spread']:7.2f} "
                      f"{full * 1000:8.1f}", flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"kind": "kvcheck-decode-step", "model": lm.name, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
