"""``kvcheck eval``: run methods on a task and print one row per method."""
from __future__ import annotations

import json
import statistics

from ..errors import KvcheckError
from ..io import check_output, write_json_atomic
from ..progress import bar
from ..tables import Column, number, render


def add_arguments(p) -> None:
    p.add_argument("--method", action="append", required=True,
                   help="method spec name[:key=value,...], e.g. snapkv:r=0.5,w=16; comma-separate or repeat for "
                        "several (full,snapkv:r=0.5,kivi); `kvcheck methods` lists them with their keys")
    p.add_argument("--ratio", type=float, help="compression_ratio of every method that has one (snapkv:r=... for one)")
    p.add_argument("--bits", type=int, help="bits of every method that has them (kivi:b=... for one)")
    p.add_argument("--task", default="passkey",
                   help="a synthetic task (passkey, multikey, kv_retrieval, variable_tracking, fewshot) or a local "
                        "file: longbench:PATH, ruler:PATH")
    p.add_argument("--samples", type=int, default=8, help="samples (files: the first N)")
    p.add_argument("--length", type=int, default=1024,
                   help="prompt length in tokens (LongBench files: longer prompts lose their middle)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--max-new-tokens", type=int)
    p.add_argument("--model", help="local Hugging Face model folder (default: the embedded SmolLM2-135M-Instruct)")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--json", help="write the rows and per-sample records to this file")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def with_shorthand(specs: list, args) -> list:
    """--ratio goes into every spec whose method has a ``compression_ratio`` field, --bits into every
    one with a ``bits`` field (``full`` takes neither); a flag that no selected method takes, or one a
    spec already sets, is an error rather than silently ignored."""
    import dataclasses

    from ..methods import get_method_class
    from ..methods.spec import MethodSpec, format_value

    fields = [{f.name for f in dataclasses.fields(get_method_class(s.name))} for s in specs]
    out = list(specs)
    for flag, field, value in (("--ratio", "compression_ratio", args.ratio), ("--bits", "bits", args.bits)):
        if value is None:
            continue
        if not any(field in f for f in fields):
            raise KvcheckError(f"{flag} does not apply to {', '.join(map(str, specs))}; drop it or add a method "
                               "that takes it.")
        for k, spec in enumerate(out):
            if field not in fields[k]:
                continue
            if field in spec.resolved():
                raise KvcheckError(f"{flag} and {spec} both set {field}; keep one.")
            out[k] = MethodSpec(spec.name, spec.params + ((field, format_value(value)),))
    return out


def row(method, records) -> dict:
    decode = [t for r in records for t in r.decode_s]
    prefill_tokens = sum(r.prompt_tokens for r in records)
    prefill_s = sum(r.prefill_s for r in records)
    scored = [r.score for r in records if r.score is not None]
    return {
        "method": method.id,
        "accuracy": statistics.fmean(scored) if scored else None,
        "mean_output_tokens": statistics.fmean(r.output_tokens for r in records),
        "kv_ratio": statistics.fmean(r.kv_ratio for r in records),
        "prefill_tok_s": prefill_tokens / prefill_s if prefill_s else None,
        "decode_tok_s": len(decode) / sum(decode) if decode else None,
    }


COLUMNS = (
    Column("method", "method", 40),
    Column("accuracy", "accuracy", 8, ">", number("8.3f")),
    Column("out_tok", "mean_output_tokens", 7, ">", number("7.1f")),
    Column("kv/full", "kv_ratio", 7, ">", number("7.3f")),
    Column("prefill tok/s", "prefill_tok_s", 13, ">", number("13.1f")),
    Column("decode tok/s", "decode_tok_s", 12, ">", number("12.1f")),
)


def format_rows(rows: list[dict]) -> str:
    return "\n".join(render(COLUMNS, rows))


def run(args) -> int:
    from ..engine import generate
    from ..model import load_model
    from ..tasks import parse_task_spec

    from ..methods.spec import parse_list

    methods = [s.build() for s in with_shorthand(parse_list(args.method), args)]  # all checked before loading
    if args.batch_size < 1 or args.samples < 1:
        raise KvcheckError("--samples and --batch-size must be >= 1.")
    if args.max_new_tokens is not None and args.max_new_tokens < 1:
        raise KvcheckError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}.")
    if args.json:
        check_output(args.json, "--json")
    spec = parse_task_spec(args.task, args.length, args.samples, args.seed)
    task = spec.task
    lm = load_model(args.model, args.device, args.dtype)
    max_new = args.max_new_tokens or task.max_new_tokens
    context = int(getattr(lm.model.config, "max_position_embeddings", 0) or 0)
    if context and spec.length and spec.length + max_new > context:
        raise KvcheckError(f"--length {spec.length} + {max_new} new tokens exceeds the model's context of {context} "
                           "tokens; use a shorter --length.")
    samples = spec.samples(lm.tokenizer)
    rows, records = [], {}
    with bar(len(samples) * len(methods), f"kvcheck eval {task.name}", args.quiet) as pb:
        for m in methods:
            recs = generate(lm, samples, m, max_new, args.batch_size, progress=pb.update, score=task.score)
            rows.append(row(m, recs))
            records[m.id] = [r.as_dict() for r in recs]
    print(format_rows(rows))
    if args.json:
        write_json_atomic(args.json, {"kind": "kvcheck-eval", "model": lm.name, "task": task.name,
                                      "length": spec.length, "rows": rows, "records": records})
    return 0
