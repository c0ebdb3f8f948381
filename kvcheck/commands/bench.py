"""``kvcheck bench``: prefill/decode throughput, TTFT, TPOT, end-to-end latency, peak memory and KV
bytes of methods over a batch × length grid, each as a ratio to ``full`` measured in the same run."""
from __future__ import annotations

from ..errors import KvcheckError
from ..io import check_output, write_json_atomic
from ..progress import bar


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


def format_points(points) -> str:
    head = (f"{'method':40s} {'b':>3s} {'len':>6s} {'kv/full':>7s} {'prefill×':>8s} {'compress':>8s} "
            f"{'decode×':>7s} {'speedup':>7s} {'bound':>6s} {'TTFT s':>8s} {'TPOT ms':>8s} {'peak×':>6s}")
    lines = [head, "-" * len(head)]
    for p in points:
        peak = "-" if p.peak_mem_ratio is None else f"{p.peak_mem_ratio:6.3f}"
        lines.append(f"{p.method[:40]:40s} {p.batch:3d} {p.length:6d} {p.kv_ratio:7.3f} {p.prefill_ratio:8.3f} "
                     f"{p.compress_share:8.3f} {p.decode_ratio:7.3f} {p.decode_speedup:7.3f} {p.decode_bound:6.3f} "
                     f"{p.ttft_s:8.3f} {p.tpot_s * 1000:8.2f} {peak:>6s}")
    lines.append("prefill×/decode×: time ratio to full (lower is faster); speedup: full decode step / method's; "
                 "bound: (weights + full KV) / (weights + KV held)")
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
    if args.json:
        from ..machine import machine_key

        write_json_atomic(args.json, {"kind": "kvcheck-bench", "model": lm.name,
                                      "machine": machine_key(lm.device, str(lm.dtype).replace("torch.", "")),
                                      "points": [p.as_dict() for p in points]})
    return 0
