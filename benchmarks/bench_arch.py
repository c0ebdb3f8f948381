"""Throughput of methods vs ``full`` on a model *architecture* with random weights (timing depends on
shapes, not weight values), e.g. to see the decode bound on a 7-8B-sized model on a GPU runner.

    python benchmarks/bench_arch.py --arch llama3-8b --device cuda --batch 1,8 --length 1024,4096 \\
        --method snapkv:compression_ratio=0.5 --method kivi:bits=4

Prints one row per (method, batch, length), every figure a ratio to ``full`` measured in the same run.

``--layers N`` builds only the first N decoder layers: prefill time and a method's compression time both
grow with the number of layers, so prefill ratios hold while each run costs N / L of the full model's
(decode ratios do not: the output projection weighs more). On a CPU runner shared with other work,
``--threads 1 --clock cpu`` (process CPU time) keeps timings steady.
"""
from __future__ import annotations

import argparse
import json
import sys

import torch

ARCHS = {
    "smollm2-135m": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                         num_key_value_heads=3, vocab_size=49152, rope_theta=100000.0, max_position_embeddings=8192,
                         tie_word_embeddings=True),
    "llama3-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                      num_key_value_heads=8, vocab_size=128256, rope_theta=500000.0, max_position_embeddings=8192),
}


class _NoTokenizer:
    pad_token_id = 0
    eos_token_id = None


def build(arch: str, device: str, dtype: torch.dtype, layers: int | None = None):
    from transformers import LlamaConfig, LlamaForCausalLM

    from kvcheck.attention import register
    from kvcheck.model import LoadedModel

    register()
    shape = dict(ARCHS[arch])
    if layers:
        shape["num_hidden_layers"] = layers
    cfg = LlamaConfig(**shape, attn_implementation="kvcheck")
    with torch.device(device):
        model = LlamaForCausalLM(cfg).to(dtype).eval()
    name = f"{arch}-random" + (f"-{layers}layers" if layers else "")
    return LoadedModel(model, _NoTokenizer(), name, torch.device(device), dtype)


def main(argv=None) -> int:
    from kvcheck.bench import measure_point
    from kvcheck.build import parse_method_spec
    from kvcheck.commands.bench import format_points

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", choices=sorted(ARCHS), default="smollm2-135m")
    p.add_argument("--method", action="append", required=True)
    p.add_argument("--batch", default="1")
    p.add_argument("--length", default="1024")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--decode-steps", type=int, default=16)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--layers", type=int, help="build only the first N decoder layers (prefill ratios hold)")
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="cpu: process CPU time (CPU runs on a shared machine, with --threads 1)")
    p.add_argument("--json")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    dtype = torch.bfloat16 if a.device.startswith("cuda") else torch.float32
    lm = build(a.arch, a.device, dtype, a.layers)
    methods = [parse_method_spec(m) for m in a.method]
    points = []
    print(f"arch={lm.name} (random weights) device={a.device} dtype={str(dtype).replace('torch.', '')} "
          f"threads={torch.get_num_threads()} clock={a.clock}", flush=True)
    for m in methods:
        for b in (int(x) for x in a.batch.split(",")):
            for n in (int(x) for x in a.length.split(",")):
                points.append(measure_point(lm, m, b, n, a.repeats, a.decode_steps, clock=a.clock))
                print(format_points(points[-1:]).splitlines()[2], flush=True)  # one row as it completes
    print(format_points(points))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"kind": "kvcheck-bench", "model": lm.name, "points": [x.as_dict() for x in points]}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
