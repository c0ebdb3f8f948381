"""KV bytes held after prefill by every method the root conftest.py declares, as a ratio to the full
cache, read off the real cache objects (``CompressedCache.kv_bytes``), not computed from formulas.

One prompt of exactly N seeded random token ids per length (bytes held depend on the length, not on
the content: eviction budgets are functions of the token count, quantised layouts of the shape), one
captured prefill per length replayed into every method's cache (the replay keeps exactly what a live
prefill keeps). Ratios are fp16-equivalent, as kvcheck reports them (floating tensors counted at 2
bytes; packed codes and float16 scales at their real size); the real bytes held (the model runs in
float32 on CPU) are printed beside them. ``--adapters`` adds transformers' QuantizedCache backends that
are installed here.

    nice -n 10 python benchmarks/kv_bytes.py [--lengths 1024,4096] [--conftest conftest.py]
        [--adapters] [--json out.json]
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import torch


def declared(conftest: Path) -> list[tuple[str, object]]:
    from kvcheck.declare import declared_methods

    spec = importlib.util.spec_from_file_location("kvcheck_bytes_conftest", conftest)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # its @kvcheck.method factories register themselves
    return declared_methods()


def adapter_methods() -> list[tuple[str, object]]:
    from kvcheck.adapters.hf_quantized import HFQuantized, backend_available

    out = []
    if backend_available("quanto") is None:
        out += [("hf_quantized", HFQuantized("quanto", nbits=b, q_group_size=64, residual_length=128)) for b in (4, 2)]
    if backend_available("fp8") is None:
        out.append(("hf_quantized", HFQuantized("fp8")))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--lengths", default="1024,4096")
    ap.add_argument("--conftest", default=str(Path(__file__).resolve().parent.parent / "conftest.py"))
    ap.add_argument("--adapters", action="store_true", help="add the installed hf_quantized backends")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    from kvcheck import engine
    from kvcheck.bench import prompt_ids
    from kvcheck.methods import Full
    from kvcheck.model import load_model

    lm = load_model(args.model, device="cpu", dtype="float32")
    methods = declared(Path(args.conftest)) + (adapter_methods() if args.adapters else [])
    lengths = [int(x) for x in args.lengths.split(",")]
    table: dict[str, dict[int, tuple[float, int]]] = {m.id: {} for _, m in methods}
    for n in lengths:
        pre = engine.capture_tokens(lm, [prompt_ids(lm, 1, n, seed=0)[0].tolist()])
        with torch.inference_mode():
            full = engine.replay(lm, pre, Full())
            full16 = full.kv_bytes(float_bytes=2)
            for _, m in methods:
                cache = engine.replay(lm, pre, m)
                table[m.id][n] = (cache.kv_bytes(float_bytes=2) / full16, cache.kv_bytes())
                del cache
        print(f"length {n}: full cache holds {full.kv_bytes() / 2**20:.1f} MiB (float32), "
              f"{full16 / 2**20:.1f} MiB fp16-equivalent", file=sys.stderr, flush=True)
        del pre, full

    head = f"{'method':<44}" + "".join(f"{f'ratio@{n}':>12}{f'MiB@{n}':>10}" for n in lengths)
    print(head)
    print("-" * len(head))
    for mid, cols in table.items():
        print(f"{mid:<44}" + "".join(f"{cols[n][0]:>12.4f}{cols[n][1] / 2**20:>10.2f}" for n in lengths))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({mid: {str(n): {"ratio_fp16": r, "bytes": b} for n, (r, b) in cols.items()}
                       for mid, cols in table.items()}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
