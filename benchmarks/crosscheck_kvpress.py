"""Cross-check kvcheck's eviction methods against kvpress's presses on the default model.

For each method, setting and compression ratio, on the same passkey prompts (batch 1):

- agreement = |kept ∩ kept_kvpress| / |kept|, per (layer, KV head), averaged over layers, heads and
  prompts; kvpress's kept set is read off its own pipeline (``with press(model): model(...)`` on a
  DynamicCache, kept keys matched back to positions), for kvcheck's own method ("native") and for the
  press run through kvcheck's cache by ``kvcheck.adapters.kvpress.KvpressMethod`` ("adapter");
- prefill time ratio kvcheck / kvpress, same run: one warm-up round, then A/B/C interleaved repeats
  (native, adapter, kvpress, order rotating), median of each, on the first prompt. kvpress runs on a second copy
  of the model with transformers' SDPA attention; both compute logits for the last token only.

Where the rules differ on purpose, the setting is a parameter and both are reported: the observation
window (kvcheck's conftest uses 16, kvpress defaults to 64) for snapkv and pyramidkv.

The kept counts differ by one token unless ``int(n·(1 − r)) == n − int(n·r)`` (kvpress keeps
``max(1, int(n(1 − r)))``, kvcheck ``n − int(n·r)``; see ``kvcheck.methods.counts``): ``--tokens N``
cuts every prompt to its first N tokens, e.g. 512 with ``--ratios 0.25,0.5,0.75``, where they agree;
rows where they do not are flagged. Presses the adapter cannot run (``ExpectedAttentionPress`` needs the
layer's hidden states, ``BlockPress`` is no ScorerPress) have no adapter column ("-").

Run in the kvpress environment (kvpress pins transformers < 5.3)::

    bash benchmarks/kvpress_env.sh
    nice -n 10 .venv-kvpress/bin/python benchmarks/crosscheck_kvpress.py [--prompts 3] [--length 1024]
        [--repeats 5] [--threads 1 --clock cpu] [--json out.json]
    nice -n 10 .venv-kvpress/bin/python benchmarks/crosscheck_kvpress.py --only expected_attention,keydiff
        --tokens 512 --ratios 0.25,0.5,0.75
"""
from __future__ import annotations

import argparse
import importlib.metadata
import json
import statistics
import sys
import time
from dataclasses import dataclass

import torch


@dataclass
class Pair:
    label: str
    setting: str
    native: object  # ratio → kvcheck method
    press: object  # ratio → kvpress press
    adapter: bool = True  # whether kvcheck.adapters.kvpress can run the press too


def pairs() -> list[Pair]:
    import kvpress

    from kvcheck.methods import TOVA, KNorm, PyramidKV, SnapKV, StreamingLLM
    from kvcheck.methods.expected_attention import ExpectedAttention
    from kvcheck.methods.keydiff import KeyDiff

    out = [Pair("streaming_llm", "sinks 4", lambda r: StreamingLLM(r, sinks=4),
                lambda r: kvpress.StreamingLLMPress(r, n_sink=4)),
           Pair("knorm", "-", lambda r: KNorm(r), lambda r: kvpress.KnormPress(r)),
           Pair("tova", "-", lambda r: TOVA(r), lambda r: kvpress.TOVAPress(r))]
    for w in (16, 64):
        out.append(Pair("snapkv", f"window {w}", lambda r, w=w: SnapKV(r, window=w, kernel=5, pooling="avg"),
                        lambda r, w=w: kvpress.SnapKVPress(r, window_size=w, kernel_size=5)))
    for w in (16, 64):
        out.append(Pair("pyramidkv", f"window {w}", lambda r, w=w: PyramidKV(r, window=w, kernel=5, beta=20),
                        lambda r, w=w: kvpress.PyramidKVPress(r, window_size=w, kernel_size=5, beta=20)))
    out.append(Pair("expected_attention", "sinks 4", lambda r: ExpectedAttention(r, n_sink=4),
                    lambda r: kvpress.ExpectedAttentionPress(r, n_sink=4), adapter=False))
    out.append(Pair("keydiff", "-", lambda r: KeyDiff(r), lambda r: kvpress.KeyDiffPress(r)))
    out.append(Pair("keydiff", "block 128", lambda r: KeyDiff(r, block=128),
                    lambda r: kvpress.BlockPress(kvpress.KeyDiffPress(r), block_size=128), adapter=False))
    return out


def load(path):
    from transformers import AutoModelForCausalLM

    from kvcheck.model import load_model, resolve_model_path

    lm = load_model(path, device="cpu", dtype="float32")
    plain = AutoModelForCausalLM.from_pretrained(resolve_model_path(path), dtype=torch.float32,
                                                 attn_implementation="sdpa").eval()
    return lm, plain


@torch.inference_mode()
def kvpress_run(model, ids: torch.Tensor, press=None):
    """One prefill through kvpress's pipeline (or plain, without a press); returns the DynamicCache."""
    from transformers import DynamicCache

    cache = DynamicCache()
    if press is None:
        model(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
    else:
        with press(model):
            model(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
    return cache


@torch.inference_mode()
def kvcheck_run(lm, ids: torch.Tensor, method):
    from kvcheck import engine
    from kvcheck.cache import CompressedCache

    t = ids.shape[1]
    cache = CompressedCache(method, lm.config.num_hidden_layers)
    engine.forward(lm.model, ids, torch.arange(t)[None], torch.ones(1, t, dtype=torch.bool), cache)
    return cache


def pct(x) -> str:
    """A share as a percentage; "-" when not measured."""
    return "-" if x is None else f"{x:.1%}"


def agreement(kept: list[torch.Tensor], ref: list[torch.Tensor]) -> float:
    """Mean over layers and heads of |kept ∩ ref| / |kept|; kept/ref: per layer ``[kv_heads, n]``."""
    vals = []
    for a, b in zip(kept, ref):
        for ha, hb in zip(a.tolist(), b.tolist()):
            vals.append(len(set(ha) & set(hb)) / len(ha))
    return sum(vals) / len(vals)


CLOCK = time.perf_counter  # --clock cpu: time.process_time


def timed(fn) -> float:
    t0 = CLOCK()
    fn()
    return CLOCK() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="local HF model folder (default: the embedded default model)")
    ap.add_argument("--prompts", type=int, default=3)
    ap.add_argument("--length", type=int, default=1024)
    ap.add_argument("--ratios", default="0.5,0.75")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--only", default="", help="comma-separated method labels to run (default: all)")
    ap.add_argument("--tokens", type=int, default=None,
                    help="cut every prompt to its first N tokens (e.g. 512, where both keep counts agree)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="cpu: process CPU time, for a shared machine (use with --threads 1)")
    args = ap.parse_args(argv)
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    if args.threads:
        torch.set_num_threads(args.threads)

    import kvpress
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    from kvcheck import engine
    from kvcheck.adapters.kvpress import KvpressMethod, kept_positions
    from kvcheck.methods import Full
    from kvcheck.tasks import get_task

    lm, plain = load(args.model)
    samples = get_task("passkey").samples(lm.tokenizer, args.prompts, args.length, seed=0)
    prompts = [torch.tensor([engine.encode(lm.tokenizer, s)[:args.tokens]]) for s in samples]
    ratios = [float(r) for r in args.ratios.split(",")]
    chosen = [p for p in pairs() if not args.only or p.label in args.only.split(",")]
    print(f"kvpress {importlib.metadata.version('kvpress')} | transformers "
          f"{transformers.__version__} | torch {torch.__version__} | threads {torch.get_num_threads()} | "
          f"prompts {len(prompts)} × {[p.shape[1] for p in prompts]} tokens", file=sys.stderr)

    full_keys = [[layer.keys[0] for layer in kvpress_run(plain, ids).layers] for ids in prompts]
    captures = [engine.capture_tokens(lm, [ids[0].tolist()]) for ids in prompts]
    rows = []
    for pair in chosen:
        for r in ratios:
            native, press = pair.native(r), pair.press(r)
            adapter = KvpressMethod(press) if pair.adapter else None
            agree_n, agree_a, size_n, size_p, ordered, total = [], [], [], [], 0, 0
            for ids, keys, pre in zip(prompts, full_keys, captures):
                ref_cache = kvpress_run(plain, ids, press)
                slot_order = [kept_positions(l.keys[0], k, sort=False) for l, k in zip(ref_cache.layers, keys)]
                ref = [s.sort(dim=-1).values for s in slot_order]
                ordered += sum(int(bool((s[h, 1:] > s[h, :-1]).all())) for s in slot_order for h in range(s.shape[0]))
                total += sum(s.shape[0] for s in slot_order)
                with torch.inference_mode():  # the replay keeps exactly what a live prefill keeps
                    n_cache = engine.replay(lm, pre, native)
                    a_cache = engine.replay(lm, pre, adapter) if adapter is not None else None
                agree_n.append(agreement([l.positions[0] for l in n_cache.layers], ref))
                if a_cache is not None:
                    agree_a.append(agreement([l.positions[0] for l in a_cache.layers], ref))
                size_n.append(statistics.mean(l.keys.shape[2] for l in n_cache.layers))
                size_p.append(statistics.mean(s.shape[1] for s in ref))
            ids = prompts[0]
            runs = {"native": lambda: kvcheck_run(lm, ids, native), "adapter": lambda: kvcheck_run(lm, ids, adapter),
                    "kvpress": lambda: kvpress_run(plain, ids, press)}
            if adapter is None:
                del runs["adapter"]
            times = {k: [] for k in runs}
            order = list(runs)
            warm = not rows  # one warm-up round, before the first timed row
            for rep in range(args.repeats + warm):
                for k in order[rep % len(order):] + order[:rep % len(order)]:
                    s = timed(runs[k])
                    if rep >= warm:
                        times[k].append(s)
            med = {k: statistics.median(v) for k, v in times.items()}
            med.setdefault("adapter", float("nan"))
            row = {"method": pair.label, "setting": pair.setting, "ratio": r,
                   "agree_native": statistics.mean(agree_n),
                   "agree_adapter": statistics.mean(agree_a) if agree_a else None,
                   "counts_agree": all(int(p.shape[1] * (1 - r)) == p.shape[1] - int(p.shape[1] * r)
                                       for p in prompts),
                   "kept_native": statistics.mean(size_n), "kept_kvpress": statistics.mean(size_p),
                   "kvpress_positional_order": ordered / total,
                   "time_native_over_kvpress": med["native"] / med["kvpress"],
                   "time_adapter_over_kvpress": med["adapter"] / med["kvpress"],
                   "kvpress_prefill_s": med["kvpress"], "native_prefill_s": med["native"],
                   "adapter_prefill_s": med["adapter"]}
            rows.append(row)
            print(f"{pair.label} {pair.setting} r{r}: native {row['agree_native']:.1%}, adapter "
                  f"{pct(row['agree_adapter'])}, time {row['time_native_over_kvpress']:.2f} / "
                  f"{row['time_adapter_over_kvpress']:.2f}", file=sys.stderr, flush=True)

    ids = prompts[0]  # the two frameworks' full-cache prefill, for scale
    base = {"kvcheck": [], "transformers": []}
    for rep in range(args.repeats):
        if rep % 2:
            b, a = timed(lambda: kvpress_run(plain, ids)), timed(lambda: kvcheck_run(lm, ids, Full()))
        else:
            a, b = timed(lambda: kvcheck_run(lm, ids, Full())), timed(lambda: kvpress_run(plain, ids))
        base["kvcheck"].append(a)
        base["transformers"].append(b)
    full_ratio = statistics.median(base["kvcheck"]) / statistics.median(base["transformers"])

    head = (f"{'method':<19}{'setting':<11}{'ratio':>6}{'agree native':>14}{'agree adapter':>15}"
            f"{'kept kvcheck':>14}{'kept kvpress':>14}{'t native/kvp':>14}{'t adapter/kvp':>15}")
    print(head)
    print("-" * len(head))
    for row in rows:
        print(f"{row['method']:<19}{row['setting']:<11}{row['ratio']:>6}{row['agree_native']:>14.1%}"
              f"{pct(row['agree_adapter']):>15}{row['kept_native']:>14.1f}{row['kept_kvpress']:>14.1f}"
              f"{row['time_native_over_kvpress']:>14.2f}{row['time_adapter_over_kvpress']:>15.2f}"
              + ("" if row["counts_agree"] else "  (kept counts differ)"))
    print(f"full cache, no compression: kvcheck / transformers prefill time {full_ratio:.2f} "
          f"(median of {args.repeats}; transformers {statistics.median(base['transformers']):.3f} s)")
    order = statistics.mean(row["kvpress_positional_order"] for row in rows)
    print(f"kvpress's kept slots in positional order: {order:.1%} of (layer, head) rows (it stores them by score)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "full_prefill_ratio": full_ratio, "prompts": [p.shape[1] for p in prompts],
                       "transformers": transformers.__version__, "torch": torch.__version__}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
