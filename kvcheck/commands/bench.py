"""``kvcheck bench``: prefill/decode throughput, TTFT, TPOT, end-to-end latency, peak memory and KV
bytes of methods over a batch × length grid, each as a ratio to ``full`` measured in the same run;
then the counted work of each point (:mod:`kvcheck.work`) and the speed-ups it predicts on named GPUs
(:mod:`kvcheck.metrics.roofline`)."""
from __future__ import annotations

from ..errors import KvcheckError
from ..io import check_output, write_json_atomic
from ..progress import bar
from ..tables import Column, number, render


def add_arguments(p) -> None:
    p.add_argument("--method", action="append", required=True,
                   help="method spec name[:key=value,...], e.g. snapkv:r=0.5,w=16; comma-separate or repeat for "
                        "several (full,snapkv:r=0.5,kivi:b=4)")
    p.add_argument("--batch", default="1", help="comma-separated batch sizes (default 1)")
    p.add_argument("--length", default="1024", help="comma-separated prompt lengths in tokens (default 1024)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--decode-steps", type=int, default=16)
    p.add_argument("--model")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="wall: elapsed time (CUDA events on GPU); cpu: process CPU time, for CPU runs on a "
                        "shared machine (use with --threads 1)")
    p.add_argument("--threads", type=int, help="torch intra-op threads on CPU (default: torch's)")
    p.add_argument("--no-work", action="store_true", help="skip the counted work and GPU predictions")
    p.add_argument("--json", help="write every point to this file (input to `kvcheck report`)")
    p.add_argument("--quiet", action="store_true")


def _ints(text: str, what: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise KvcheckError(f"--{what} takes comma-separated integers, got {text!r}.") from None
    if not values or min(values) < 1:
        raise KvcheckError(f"--{what} values must be >= 1, got {text!r}.")
    return values


COLUMNS = (
    Column("method", "method", 40, clip=True),
    Column("b", "batch", 3, ">"),
    Column("len", "length", 6, ">"),
    Column("kv/full", "kv_ratio", 7, ">", ".3f"),
    Column("prefill×", "prefill_ratio", 8, ">", ".3f"),
    Column("compress", "compress_share", 8, ">", ".3f"),
    Column("decode×", "decode_ratio", 7, ">", ".3f"),
    Column("speedup", "decode_speedup", 7, ">", ".3f"),
    Column("bound", "decode_bound", 6, ">", ".3f"),
    Column("TTFT s", "ttft_s", 8, ">", ".3f"),
    Column("TPOT ms", lambda p: p.tpot_s * 1000, 8, ">", ".2f"),
    Column("peak×", "peak_mem_ratio", 6, ">", number("6.3f")),
)


def format_points(points) -> str:
    """The header, a rule, one line per point, then a line saying how to read the ratios."""
    lines = render(COLUMNS, points)
    lines.append("prefill×/decode×: time ratio to full (lower is faster); speedup: full decode step / method's; "
                 "bound: (weights + full KV) / (weights + KV held)")
    return "\n".join(lines)


WORK_COLUMNS = (
    Column("method", "method", 40, clip=True),
    Column("b", "batch", 3, ">"),
    Column("len", "length", 6, ">"),
    Column("ops", lambda r: r["work"]["work.prefill.method_ops"], 7, ">", ".0f"),
    Column("GFLOP", lambda r: r["work"]["work.prefill.method_flops"] / 1e9, 7, ">", ".3f"),
    Column("MB", lambda r: r["work"]["work.prefill.method_bytes"] / 1e6, 8, ">", ".1f"),
    Column("py", lambda r: r["work"]["work.prefill.method_py_lines"], 7, ">", ".0f"),
    Column("ops/st", lambda r: r["work"].get("work.decode.method_ops"), 7, ">", number(".0f")),
    Column("MB/st", lambda r: r["work"].get("work.decode.method_bytes", 0) / 1e6, 7, ">", ".2f"),
    Column("KV MB/st", lambda r: r["work"].get("work.decode.kv_path_bytes", 0) / 1e6, 8, ">", ".2f"),
    Column("syncs/st", lambda r: r["work"].get("work.decode.syncs"), 8, ">", number(".1f")),
)


def _predicted_columns(gpus) -> tuple:
    cols = [Column("method", "method", 40, clip=True), Column("b", "batch", 3, ">"), Column("len", "length", 6, ">")]
    for g in gpus:
        cols.append(Column(f"{g}", lambda r, g=g: f"{r['predicted'][g]['prefill']:.2f}/"
                                                  f"{r['predicted'][g].get('decode', float('nan')):.2f}", 12, ">"))
    return tuple(cols)


def format_work(rows) -> str:
    """The counted work of each point (method region: prefill, then per decode step) and the predicted
    prefill/decode time ratios to full on each named GPU."""
    lines = ["counted work of the method region (prefill; per decode step /st), KV-path bytes per step, host syncs:"]
    lines += render(WORK_COLUMNS, rows)
    gpus = list(rows[0]["predicted"]) if rows else []
    lines += ["", "predicted time ratio to full, prefill/decode, from the counted work (roofline; > 1: slower):"]
    lines += render(_predicted_columns(gpus), rows)
    return "\n".join(lines)


def run(args) -> int:
    import torch

    from ..bench import measure_point
    from ..model import load_model

    from ..methods.spec import parse_list

    methods = [s.build() for s in parse_list(args.method)]
    batches, lengths = _ints(args.batch, "batch"), _ints(args.length, "length")
    if args.repeats < 1 or args.decode_steps < 1:
        raise KvcheckError("--repeats and --decode-steps must be >= 1.")
    if args.json:
        check_output(args.json, "--json")
    if args.threads is not None:
        if args.threads < 1:
            raise KvcheckError("--threads must be >= 1.")
        torch.set_num_threads(args.threads)
    lm = load_model(args.model, args.device, args.dtype)
    if args.clock == "cpu" and lm.device.type != "cpu":
        raise KvcheckError(f"--clock cpu times CPU runs only; the model is on {lm.device}: use --clock wall.")
    limit = getattr(lm.model.config, "max_position_embeddings", 0)
    if limit and max(lengths) + args.decode_steps > limit:
        raise KvcheckError(f"--length {max(lengths)} + decode steps exceeds the model's context of {limit}.")
    points = []
    with bar(len(methods) * len(batches) * len(lengths), "kvcheck bench", args.quiet, unit="point") as pb:
        for m in methods:
            for b in batches:
                for n in lengths:
                    points.append(measure_point(lm, m, b, n, args.repeats, args.decode_steps, clock=args.clock))
                    pb.update(1)
    print(f"model={lm.name} device={lm.device} dtype={str(lm.dtype).replace('torch.', '')} clock={args.clock}"
          + (f" threads={torch.get_num_threads()}" if lm.device.type == "cpu" else ""))
    print(format_points(points))
    work_rows = [] if args.no_work else _count(lm, methods, batches, lengths, args.decode_steps, args.quiet)
    if work_rows:
        print()
        print(format_work(work_rows))
    if args.json:
        from ..machine import machine_key

        write_json_atomic(args.json, {"kind": "kvcheck-bench", "model": lm.name,
                                      "machine": machine_key(lm.device, str(lm.dtype).replace("torch.", "")),
                                      "points": [p.as_dict() for p in points], "work": work_rows})
    return 0


def _count(lm, methods, batches, lengths, steps, quiet) -> list[dict]:
    from ..bench import prompt_ids
    from ..methods.full import Full
    from ..metrics.roofline import predicted_ratios
    from ..metrics.work import work_metrics
    from ..bench import count_run

    rows = []
    with bar(len(batches) * len(lengths) * (len(methods) + 1), "counting work", quiet, unit="run") as pb:
        for b in batches:
            for n in lengths:
                ids = prompt_ids(lm, b, n)
                full = count_run(lm, ids, Full(), steps)
                pb.update(1)
                for m in methods:
                    c = full if m.id == "full" else count_run(lm, ids, m, steps)
                    pb.update(1)
                    rows.append({"method": m.id, "batch": b, "length": n, "work": work_metrics(c.work),
                                 "predicted": predicted_ratios(c.work, full.work)})
    return rows
