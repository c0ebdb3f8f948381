"""``kvcheck samples``: negative samples of a set of methods against the baseline, per dataset and per
task type, from a folder of per-sample score files or from ``kvcheck eval --json`` results.

A folder holds ``CONFIG_<dataset>_eval.json`` files, each a JSON list of ``{"id", "score"}``; a file
whose scores exceed 1 is read as 0–100 and divided by 100. Ids compare as text (7 and "7" are the
same sample). Only datasets present for the baseline and every method are used; the rest are listed.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

from ..errors import KvcheckError
from ..io import check_output, read_json, write_json_atomic
from ..metrics.samples import (OTHER_TYPE, RULES, check_rule, check_threshold, id_key, negative_samples,
                               scores_from_eval, task_type_ratios, task_types_from_eval)
from ..tables import Column, render
from ..tasks.types import LONGBENCH_TASK_TYPES

SUFFIX = "_eval.json"


def add_arguments(p) -> None:
    p.add_argument("dir", nargs="?", help="folder of CONFIG_<dataset>_eval.json files (lists of {id, score})")
    p.add_argument("--from-eval", nargs="+", metavar="FILE",
                   help="read `kvcheck eval --json` results instead of DIR; configs are method ids (e.g. full)")
    p.add_argument("--baseline", required=True, help="the baseline config (its files' name prefix, or a method id)")
    p.add_argument("--methods", action="append", required=True,
                   help="the compared configs, comma-separated or repeated; a sample is negative only if all fail")
    p.add_argument("--threshold", type=float, default=0.1,
                   help="negative when every method scores <= (1 - t) x baseline (default 0.1)")
    p.add_argument("--rule", choices=RULES, default="seed",
                   help="seed: zero-baseline samples can be negative; strict: they never are")
    p.add_argument("--json", help="write per-dataset negative ids and per-type ratios to this file")


def load_score_file(path: Path) -> tuple[dict[str, float], bool]:
    """``{id: score}`` on a 0–1 scale, and whether the file was on 0–100."""
    data = read_json(path)
    fix = "regenerate it or move it out of the folder"
    if not isinstance(data, list):
        raise KvcheckError(f"{path} must hold a JSON list of {{id, score}} objects; {fix}.")
    scores: dict[str, float] = {}
    for k, rec in enumerate(data):
        sid, score = (rec.get("id"), rec.get("score")) if isinstance(rec, dict) else (None, None)
        if isinstance(sid, bool) or not isinstance(sid, (int, str)):
            raise KvcheckError(f"{path}: entry {k} needs an int or string 'id'; {fix}.")
        if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score) or score < 0:
            raise KvcheckError(f"{path}: entry {k} (id {sid!r}) needs a finite score >= 0; {fix}.")
        if str(sid) in scores:
            raise KvcheckError(f"{path}: id {sid!r} appears twice; {fix}.")
        scores[str(sid)] = float(score)
    top = max(scores.values(), default=0.0)
    if top > 100:
        raise KvcheckError(f"{path}: scores reach {top}, neither a 0–1 nor a 0–100 scale; {fix}.")
    if top > 1:
        return {i: s / 100 for i, s in scores.items()}, True
    return scores, False


def dataset_files(folder: Path, config: str) -> dict[str, Path]:
    prefix = config + "_"
    return {f.name[len(prefix):-len(SUFFIX)]: f for f in sorted(folder.iterdir())
            if f.name.startswith(prefix) and f.name.endswith(SUFFIX) and len(f.name) > len(prefix) + len(SUFFIX)}


def known_configs(folder: Path) -> list[str]:
    out = set()
    for f in folder.glob("*" + SUFFIX):
        for ds in LONGBENCH_TASK_TYPES:
            if f.name.endswith(f"_{ds}{SUFFIX}"):
                out.add(f.name[:-len(f"_{ds}{SUFFIX}")])
    return sorted(out)


def load_dir(folder: Path, configs: list[str]) -> tuple[dict, list[str]]:
    """``{config: {dataset: {id: score}}}`` for the datasets every config has, and notes."""
    if not folder.is_dir():
        raise KvcheckError(f"{folder} is not a folder; pass the folder of CONFIG_<dataset>{SUFFIX} files.")
    files = {c: dataset_files(folder, c) for c in configs}
    for c, found in files.items():
        if not found:
            raise KvcheckError(f"no {c}_<dataset>{SUFFIX} files in {folder}; configs there: "
                               f"{', '.join(known_configs(folder)) or 'none'}.")
    notes, rescaled = skipped_notes({c: set(f) for c, f in files.items()}), []
    common = set.intersection(*(set(f) for f in files.values()))
    tables: dict[str, dict] = {c: {} for c in configs}
    for c in configs:
        for ds in sorted(common):
            tables[c][ds], scaled = load_score_file(files[c][ds])
            if scaled:
                rescaled.append(files[c][ds].name)
    if rescaled:
        notes.append(f"read as 0–100 and divided by 100: {', '.join(rescaled)}")
    return tables, notes


def skipped_notes(datasets: dict[str, set]) -> list[str]:
    every = set.union(*datasets.values())
    return [f"skipped {ds}: nothing for {', '.join(c for c, have in datasets.items() if ds not in have)}"
            for ds in sorted(every - set.intersection(*datasets.values()))]


def load_eval(paths: list[str], configs: list[str]) -> tuple[dict, dict, list[str]]:
    docs = []
    for p in paths:
        doc = read_json(Path(p))
        if not (isinstance(doc, dict) and doc.get("kind") == "kvcheck-eval" and isinstance(doc.get("task"), str)
                and isinstance(doc.get("records"), dict)
                and all(isinstance(r, list) and all(isinstance(x, dict) for x in r) for r in doc["records"].values())):
            raise KvcheckError(f"{p} is not a `kvcheck eval --json` result; write one with kvcheck eval --json FILE.")
        docs.append(doc)
    tables = {c: scores_from_eval(docs, c) for c in configs}
    for c, t in tables.items():
        if not t:
            found = sorted({m for d in docs for m in d["records"]})
            raise KvcheckError(f"no records for method {c} in {', '.join(paths)}; methods there: {', '.join(found)}.")
    notes = skipped_notes({c: set(t) for c, t in tables.items()})
    common = set.intersection(*(set(t) for t in tables.values()))
    return {c: {ds: t[ds] for ds in common} for c, t in tables.items()}, task_types_from_eval(docs), notes


def analyse(tables: dict, baseline: str, methods: list[str], threshold: float, rule: str,
            types: dict[str, str]) -> dict:
    per = {ds: negative_samples(tables[baseline][ds], [tables[m][ds] for m in methods], threshold, rule)
           for ds in sorted(tables[baseline])}
    datasets = {ds: {"task_type": types.get(ds, OTHER_TYPE), "candidates": len(d.candidates),
                     "negatives": len(d.negative_ids),
                     "ratio": len(d.negative_ids) / len(d.candidates) if d.candidates else None,
                     "baseline_mean": d.baseline_mean, "negative_ids": d.negative_ids, "missing_ids": d.missing_ids}
                for ds, d in per.items()}
    return {"datasets": datasets, "task_types": task_type_ratios(per, types)}


def _ratio(r) -> str:
    return "-" if r is None else f"{r:.3f}"


TYPE_COLUMNS = (
    Column("task type", lambda kv: kv[0], 16),
    Column("candidates", lambda kv: kv[1]["candidates"], 10, ">", "d"),
    Column("negatives", lambda kv: kv[1]["negative"], 9, ">", "d"),
    Column("ratio", lambda kv: kv[1]["ratio"], 6, ">", _ratio),
)
DATASET_COLUMNS = (
    Column("dataset", lambda kv: kv[0], 22),
    Column("task type", lambda kv: kv[1]["task_type"], 16),
    Column("candidates", lambda kv: kv[1]["candidates"], 10, ">", "d"),
    Column("negatives", lambda kv: kv[1]["negatives"], 9, ">", "d"),
    Column("ratio", lambda kv: kv[1]["ratio"], 6, ">", _ratio),
)


def format_tables(result: dict) -> str:
    """Negatives per task type, then per dataset (grouped by task type)."""
    order = {t: k for k, t in enumerate(result["task_types"])}
    datasets = sorted(result["datasets"].items(), key=lambda kv: (order[kv[1]["task_type"]], kv[0]))
    return "\n".join(render(TYPE_COLUMNS, result["task_types"].items()) + [""]
                     + render(DATASET_COLUMNS, datasets))


def run(args) -> int:
    threshold, rule = check_threshold(args.threshold), check_rule(args.rule)
    methods = [m.strip() for spec in args.methods for m in spec.split(",") if m.strip()]
    if not methods or args.baseline in methods:
        raise KvcheckError("--methods needs at least one config other than the baseline.")
    configs = [args.baseline, *dict.fromkeys(methods)]
    if (args.dir is None) == (args.from_eval is None):
        raise KvcheckError("pass either a folder of score files (DIR) or --from-eval FILE..., not both or neither.")
    if args.json:
        check_output(args.json, "--json")
    if args.dir is not None:
        tables, notes = load_dir(Path(args.dir), configs)
        types, source = LONGBENCH_TASK_TYPES, str(args.dir)
    else:
        tables, types, notes = load_eval(args.from_eval, configs)
        source = list(args.from_eval)
    if not tables[args.baseline]:
        raise KvcheckError("no dataset is present for the baseline and every method; " + "; ".join(notes))
    result = analyse(tables, args.baseline, configs[1:], threshold, rule, types)
    for ds, v in result["datasets"].items():
        if v["missing_ids"]:
            ids = ", ".join(map(str, sorted(v["missing_ids"], key=id_key)[:10]))
            notes.append(f"{ds}: {len(v['missing_ids'])} ids not scored by every config, left out ({ids}"
                         f"{', ...' if len(v['missing_ids']) > 10 else ''})")
    print(f"negative samples: baseline {args.baseline}; methods {', '.join(configs[1:])}; "
          f"threshold {threshold}; rule {rule}\n")
    print(format_tables(result))
    for n in notes:
        print(f"note: {n}", file=sys.stderr)
    if args.json:
        write_json_atomic(args.json, {"kind": "kvcheck-samples", "source": source, "baseline": args.baseline,
                                      "methods": configs[1:], "threshold": threshold, "rule": rule,
                                      "notes": notes, **result})
    return 0
