"""Peak memory of one prefill per method, as a ratio to ``full``, on CPU (Linux).

Each (method, batch, length) prefill runs in a fresh process with glibc's mmap threshold fixed at 64 KiB,
so every tensor of 64 KiB or more is mapped on allocation and unmapped when freed: the resident set then
follows live tensors, and its peak (``VmHWM``) is the prefill's peak. Two figures per point:

- ``total``: peak resident set of the process (weights, KV cache, temporaries, interpreter) / full's;
- ``prefill``: the peak minus what was resident just before the prefill (the KV cache, activations and
  any score buffers the method builds) / full's — the stricter of the two.

    python benchmarks/prefill_memory.py --method h2o:compression_ratio=0.5 --batch 1,4 --length 1024,4096

``--layers N`` builds N decoder layers of the architecture (random weights): fewer layers shrink the KV
cache that eviction saves, so the ratios are, if anything, harsher than the whole model's.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def child(arch: str, layers: int | None, spec: str, batch: int, length: int) -> dict:
    import torch

    sys.path.insert(0, str(HERE))
    from bench_arch import build

    from kvcheck import engine
    from kvcheck.bench import prompt_ids
    from kvcheck.build import parse_method_spec
    from kvcheck.cache import CompressedCache

    torch.set_num_threads(1)
    lm = build(arch, "cpu", torch.float32, layers)
    method = parse_method_spec(spec)
    ids = prompt_ids(lm, batch, length)
    valid = torch.ones(batch, length, dtype=torch.bool)
    positions = torch.arange(length)[None].expand(batch, length)
    with torch.inference_mode():
        cache = CompressedCache(method, lm.model.config.num_hidden_layers)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        before = _rss_kib("VmRSS")
        engine.forward(lm.model, ids, positions, valid, cache)
        peak = _rss_kib("VmHWM")
    return {"method": method.id, "batch": batch, "length": length, "before": before * 1024, "peak": peak * 1024}


def measure(arch: str, layers: int | None, spec: str, batch: int, length: int) -> dict:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0")
    cmd = [sys.executable, __file__, "--child", "--arch", arch, "--method", spec, "--batch", str(batch),
           "--length", str(length)] + (["--layers", str(layers)] if layers else [])
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="smollm2-135m")
    p.add_argument("--layers", type=int)
    p.add_argument("--method", action="append", required=True)
    p.add_argument("--batch", default="1")
    p.add_argument("--length", default="1024")
    p.add_argument("--json")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        print(json.dumps(child(a.arch, a.layers, a.method[0], int(a.batch), int(a.length))))
        return 0
    rows = []
    print(f"{'method':40s} {'b':>3s} {'len':>6s} {'total×':>7s} {'prefill×':>8s} {'peak MiB':>9s}", flush=True)
    for b in (int(x) for x in a.batch.split(",")):
        for n in (int(x) for x in a.length.split(",")):
            full = measure(a.arch, a.layers, "full", b, n)
            for spec in a.method:
                m = measure(a.arch, a.layers, spec, b, n)
                row = dict(m, total_ratio=m["peak"] / full["peak"],
                           prefill_ratio=(m["peak"] - m["before"]) / (full["peak"] - full["before"]))
                rows.append(row)
                print(f"{m['method'][:40]:40s} {b:3d} {n:6d} {row['total_ratio']:7.3f} {row['prefill_ratio']:8.3f} "
                      f"{m['peak'] / 2**20:9.1f}", flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"kind": "kvcheck-prefill-memory", "arch": a.arch, "layers": a.layers, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
