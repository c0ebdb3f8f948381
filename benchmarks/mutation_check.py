"""Planted regressions against the shipped gates: does each suite catch what it claims to catch?

The repository (``kvcheck/``, ``suites/``, ``conftest.py``, ``pyproject.toml`` and the committed
``baselines/``) is copied to a temporary folder. Each mutant is one source edit (file, exact old
snippet, new snippet), applied alone to the copy; the gated suites then run at the chosen tier
(``ci``), restricted to ``full`` and one declared setting of the method the mutant affects, against
the committed baselines in the copy, and the table says which suites failed. A mutant whose old
snippet does not occur exactly once stops the script before anything runs, so mutants cannot rot
silently as the code moves; a selection that runs no test for a mutant's method is an error too.

``--clean-runs N`` also runs the unchanged copy N times on a representative subset (``full``, one
streaming_llm and one kivi setting): every run must pass, or the kills mean little. ``--jobs N``
runs N of these at a time, each in its own copy.

    nice -n 10 python benchmarks/mutation_check.py --clean-runs 5 --jobs 2 [--only sinks-dropped] [--json out.json]

The copy's ``kvcheck`` is the one imported: each run is ``python -m pytest`` with the copy as working
directory and first on ``PYTHONPATH`` (an editable install's finder comes after the path on
``sys.meta_path``); the script checks it once per copy and prints the module path.

The throughput suite gates counted work (:mod:`kvcheck.work`) against the committed baselines on
every runner, so the work mutants (slow scoring, a Python loop, repeated dequantisation, eviction
stopped while generating) run with no perf entry for this machine. A mutant marked ``perf`` would
first record this machine's perf entries on the unchanged copy (``--kvcheck-update=perf``) and run
the unchanged throughput suite once as a control.
"""
from __future__ import annotations

import argparse
import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COPIED = ("kvcheck", "suites", "baselines", "conftest.py", "pyproject.toml")
CLEAN_IDS = "full,streaming_llm-r0.5-s4,kivi-b4-g128-res32"
# the baseline-gated suites (suites/test_properties.py holds no baselines; add it with --suites suites/)
GATED = "suites/test_accuracy.py,suites/test_fidelity.py,suites/test_length_drift.py,suites/test_throughput.py"


@dataclass(frozen=True)
class Mutant:
    name: str
    what: str
    file: str
    old: str
    new: str
    ids: str  # the declared method ids gated (comma-separated; full is always added)
    perf: bool = False  # needs this machine's perf baseline, recorded first on the unchanged copy


MUTANTS = [
    Mutant("off-by-one-window", "snapkv's observation window shifted one query back (drops the last query)",
           "kvcheck/layer_api.py",
           "q = self.queries[:, :, -window:]",
           "q = self.queries[:, :, -window - 1:-1]",
           "snapkv-r0.5-w16-k5-pavg"),
    Mutant("sinks-dropped", "streaming_llm keeps no attention sinks (recent window only)",
           "kvcheck/methods/streaming_llm.py",
           "is_sink = (positions - first) < self.sinks",
           "is_sink = (positions - first) < 0",
           "streaming_llm-r0.75-s4"),
    Mutant("ratio-ignored", "every eviction budget keeps all tokens whatever compression_ratio says",
           "kvcheck/methods/base.py",
           "return n_tokens - int(n_tokens * ratio)",
           "return n_tokens",
           "random-r0.5-seed0"),
    Mutant("scores-negated", "knorm keeps the keys with the largest norm instead of the smallest",
           "kvcheck/methods/knorm.py",
           "return -inputs.keys.float().norm(dim=-1)",
           "return inputs.keys.float().norm(dim=-1)",
           "knorm-r0.5"),
    Mutant("wrong-quant-scale", "group step = range / 2^bits instead of / (2^bits - 1): the top codes clip",
           "kvcheck/quant.py",
           "step = ((hi - zero.float()) / levels).clamp_min(1e-8)",
           "step = ((hi - zero.float()) / (levels + 1)).clamp_min(1e-8)",
           "kivi-b2-g64-res32"),
    Mutant("wrong-group-axis", "kivi quantises keys per token (grouped along channels) instead of per channel",
           "kvcheck/methods/kivi.py",
           "return quant.quantize(keys, self.bits, axis=2, group_size=self.group_size, valid=valid[:, None, :, None])",
           "return quant.quantize(keys, self.bits, axis=3, group_size=self.group_size, valid=valid[:, None, :, None])",
           "kivi-b2-g64-res32"),
    Mutant("nan-injected", "dequantisation writes NaN into the first entry of every grouped axis",
           "kvcheck/quant.py",
           "x = (groups * scale).add_(zero).flatten(axis, axis + 1)",
           "x = (groups * scale).add_(zero).flatten(axis, axis + 1)\n"
           "    x = x.index_fill(axis, torch.tensor([q.lead_pad], device=x.device), float(\"nan\"))",
           "int-b8-g32-res0"),
    Mutant("eos-suppressed", "compressed methods never stop at the end-of-sequence token",
           "kvcheck/engine.py",
           "eos = set(eos_ids if eos_ids is not None else _eos_ids(lm))",
           "eos = set(eos_ids if eos_ids is not None else _eos_ids(lm)) if method.name == \"full\" else {-1}",
           "fp8-res0"),
    Mutant("positions-reset", "decode positions restart from the number of held tokens after eviction",
           "kvcheck/engine.py",
           "pos = (lengths + step)[:, None]",
           "pos = cache.kept_counts()[0][:, :1]",
           "pyramidkv-r0.5-w16-k5-pavg-beta20"),
    Mutant("slow-scoring", "snapkv scores every prompt three times (same result, 3x the work)",
           "kvcheck/methods/snapkv.py",
           "    def score(self, inputs: ScoreInputs) -> torch.Tensor:\n        t = inputs.keys.shape[2]",
           "    def score(self, inputs: ScoreInputs) -> torch.Tensor:\n"
           "        self._score(inputs)\n        self._score(inputs)\n        return self._score(inputs)\n\n"
           "    def _score(self, inputs: ScoreInputs) -> torch.Tensor:\n        t = inputs.keys.shape[2]",
           "snapkv-r0.5-w16-k5-pavg"),
    Mutant("python-loop-scorer", "knorm's scorer walks every token in a Python loop (same scores)",
           "kvcheck/methods/knorm.py",
           "        return -inputs.keys.float().norm(dim=-1)",
           "        s = -inputs.keys.float().norm(dim=-1)\n"
           "        for _ in range(s.shape[-1]):\n            pass\n        return s",
           "knorm-r0.5"),
    Mutant("dequant-repeated", "the quantised cache decodes its codes three times per forward (same values)",
           "kvcheck/cache/quantized.py",
           "            dk, dv = self.method.dequantize(self.qk, self.dtype), self.method.dequantize(self.qv, self.dtype)",
           "            for _ in range(2):\n"
           "                self.method.dequantize(self.qk, self.dtype), self.method.dequantize(self.qv, self.dtype)\n"
           "            dk, dv = self.method.dequantize(self.qk, self.dtype), self.method.dequantize(self.qv, self.dtype)",
           "kivi-b2-g64-res32"),
    Mutant("stops-evicting-on-decode", "decode-time eviction never runs: the cache grows past its budget while generating",
           "kvcheck/cache/eviction.py",
           "        if self.over_budget():\n            scores = self.method.decode_scores(",
           "        if False and self.over_budget():\n            scores = self.method.decode_scores(",
           "streaming_llm-r0.5-s4"),
    Mutant("masked-not-freed", "eviction masks the evicted slots at prefill but keeps them in memory",
           "kvcheck/cache/eviction.py",
           "self.select(scores, self.budget, int(self.budget.max()))",
           "self.select(scores, self.budget, self.keys.shape[2])",
           "knorm-r0.75"),
    # the 2026 catalogue: the engines' KV-cache formats
    Mutant("int8-pth-truncates", "int8_per_token_head truncates toward zero instead of rounding half away",
           "kvcheck/methods/int8_per_token_head.py",
           "return Int8PerTokenHeadTensor(formats.round_half_away(y).clamp_(-128, 127).to(torch.int8), scale)",
           "return Int8PerTokenHeadTensor(y.trunc().clamp_(-128, 127).to(torch.int8), scale)",
           "int8_per_token_head-res0"),
    Mutant("fp8-pth-mean-scale", "fp8_per_token_head scales by the mean |x| instead of absmax: large entries saturate",
           "kvcheck/methods/fp8_per_token_head.py",
           "scale = (x.abs().amax(dim=-1, keepdim=True) / formats.E4M3_MAX).clamp_min(MIN_SCALE)",
           "scale = (x.abs().mean(dim=-1, keepdim=True) / formats.E4M3_MAX).clamp_min(MIN_SCALE)",
           "fp8_per_token_head-res0"),
    Mutant("vllm-fp8-read-as-e5m2", "vllm_fp8 decodes its e4m3 codes as e5m2",
           "kvcheck/methods/vllm_fp8.py",
           "return formats.e4m3_to_float(packed.codes).mul_(packed.scale).to(dtype)",
           "return packed.codes.view(torch.float8_e5m2).float().mul_(packed.scale).to(dtype)",
           "vllm_fp8-ks1.0-vs1.0-res0"),
    Mutant("mxfp8-scale-one-low", "mxfp8's UE8M0 exponent one too small: each block's upper half saturates at 448",
           "kvcheck/methods/mxfp8.py",
           "e = formats.ceil_log2(amax / formats.E4M3_MAX).clamp_(E_MIN, E_MAX)",
           "e = (formats.ceil_log2(amax / formats.E4M3_MAX) - 1).clamp_(E_MIN, E_MAX)",
           "mxfp8-res0"),
    Mutant("fp4-scale-unbiased", "fp4_mx_block16 stores the scale exponent without its +127 bias",
           "kvcheck/methods/fp4_mx_block16.py",
           "return FP4Block16Tensor(formats.pack_nibbles(codes), (e + formats.UE8M0_BIAS).to(torch.uint8))",
           "return FP4Block16Tensor(formats.pack_nibbles(codes), e.to(torch.uint8))",
           "fp4_mx_block16-res0"),
    Mutant("int4-unrotate-wrong-signs", "int4_per_token_head undoes its Hadamard rotation with the sign vector reversed",
           "kvcheck/formats_fp4.py",
           "out = wht(blocks) * s if inverse else wht(blocks * s)",
           "out = wht(blocks) * s.flip(-1) if inverse else wht(blocks * s)",
           "int4_per_token_head-res0"),
    Mutant("nvfp4-outscale-not-inverted", "nvfp4 codes x·SF instead of x/SF",
           "kvcheck/formats_fp4.py",
           "out = torch.where(sff != 0, 1.0 / (sff * inv_sf_scale), torch.zeros_like(sff))",
           "out = torch.where(sff != 0, sff * inv_sf_scale, torch.zeros_like(sff))",
           "nvfp4-res0-kvs1.0"),
    Mutant("4over6-codes-at-the-other-scale", "nvfp4_4over6 stores one candidate's scale but codes with the other's",
           "kvcheck/methods/nvfp4_4over6.py",
           "return sf, torch.where(use4[..., None], out4, out6)",
           "return sf, torch.where(use4[..., None], out6, out4)",
           "nvfp4_4over6-res0-kvs1.0"),
    Mutant("tq-rotation-sign", "turboquant's Hadamard built as [[H, H], [-H, H]]: the rotation back no longer undoes it",
           "kvcheck/formats_turboquant.py",
           "h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)",
           "h = torch.cat([torch.cat([h, h], 1), torch.cat([-h, h], 1)], 0)",
           "turboquant-pk3v4_nc"),
    Mutant("tq-no-norm-correction", "turboquant dequantises keys without renormalising the centroid vector (NC off)",
           "kvcheck/methods/turboquant.py",
           "c = c / torch.sqrt((c * c).sum(-1, keepdim=True) + tqf.NC_EPS)",
           "c = c * 1.0",
           "turboquant-pk3v4_nc"),
    # the 2026 catalogue: kvpress's newer presses
    Mutant("ea-sinks-unprotected", "expected_attention ranks its sinks by score instead of keeping them first",
           "kvcheck/methods/expected_attention.py",
           'scores = scores.masked_fill(sink[:, None], float("inf"))',
           'scores = scores.masked_fill(sink[:, None] & False, float("inf"))',
           "expected_attention-r0.5-fp512-s4-covTrue-vnTrue-eps0.0-cntkvcheck"),
    Mutant("keydiff-scores-negated", "keydiff keeps the keys most like the mean key instead of the least",
           "kvcheck/methods/keydiff.py",
           "return -F.cosine_similarity(keys, anchor, dim=-1)",
           "return F.cosine_similarity(keys, anchor, dim=-1)",
           "keydiff-r0.5-b0-cntkvcheck"),
    Mutant("threshold-window-unprotected", "threshold evicts low-scored tokens inside the sliding window too",
           "kvcheck/methods/threshold.py",
           "old = held.positions < (seen - self.window)[:, None, None]",
           "old = held.positions < seen[:, None, None]",
           "threshold-thr-20.0-w64-decTrue-sknorm"),
    Mutant("decoding-never-fires", "decode-time compression never fires: the cache grows past target + interval",
           "kvcheck/methods/variable.py",
           "return (new > 0) & ((steps >= self.interval) | (new >= target))",
           "return (new > 0) & (steps < 0)",
           "decoding-t32-n8-sknorm,decoding_ratio-r0.5-n8-sknorm"),
    Mutant("decoding-keeps-lowest", "decode-time top-k keeps the lowest-scored tokens",
           "kvcheck/methods/variable.py",
           "argsort(dim=-1, descending=True, stable=True)",
           "argsort(dim=-1, descending=False, stable=True)",
           "decoding-t32-n8-sknorm"),
]


@dataclass
class RunResult:
    rc: int
    seconds: float
    failed: dict = field(default_factory=dict)  # suite -> failing test ids
    ran: list = field(default_factory=list)  # every test id that ran
    passed: int = 0
    skipped: int = 0
    tail: str = ""

    @property
    def caught_by(self) -> list[str]:
        return sorted(self.failed)


def check_mutants(mutants, root: Path) -> None:
    """Every mutant's old snippet occurs exactly once in its file (else the mutant has rotted)."""
    stale = []
    for m in mutants:
        n = (root / m.file).read_text().count(m.old)
        if n != 1:
            stale.append(f"{m.name}: old snippet occurs {n} times in {m.file}")
    if stale:
        sys.exit("mutation_check: stale mutants, update them to the current code:\n  " + "\n  ".join(stale))


def make_copy(dest: Path) -> Path:
    skip = shutil.ignore_patterns("__pycache__", "*.pyc", ".hypothesis", ".pytest_cache")
    for name in COPIED:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=skip)
        elif src.exists():
            shutil.copy2(src, dest / name)
    return dest


def env_for(copy: Path) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(copy) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["CI"] = "1"  # the suites' hypothesis profile: derandomized, as on CI
    env.pop("PYTEST_ADDOPTS", None)
    return env


def verify_import(copy: Path) -> str:
    out = subprocess.run([sys.executable, "-c", "import kvcheck, kvcheck.plugin; print(kvcheck.plugin.__file__)"],
                         cwd=copy, env=env_for(copy), capture_output=True, text=True, check=True).stdout.strip()
    if not Path(out).resolve().is_relative_to(copy.resolve()):
        sys.exit(f"mutation_check: the copy's kvcheck is not the one imported ({out}); stopping.")
    return out


def _suite(classname: str) -> str:
    name = classname.rsplit(".", 1)[-1]
    return name[len("test_"):] if name.startswith("test_") else name


def selection(ids: str) -> list[str]:
    """pytest arguments running exactly these declared method ids (full included)."""
    ids = ["full"] + [i for i in ids.split(",") if i and i != "full"]
    names = dict.fromkeys(i.split("-")[0] for i in ids)  # a method id starts with its method name
    return ["--kvcheck-methods", ",".join(names), "-k", " or ".join(ids)]


def run_suites(copy: Path, ids: str, tier: str, suites: list[str], extra=()) -> RunResult:
    xml = copy / "junit.xml"
    xml.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "pytest", *suites, "--kvcheck-tier", tier, *selection(ids),
           "-p", "no:cacheprovider", "-q", "-rfE", f"--junitxml={xml}", *extra]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=copy, env=env_for(copy), capture_output=True, text=True)
    res = RunResult(proc.returncode, time.perf_counter() - t0, tail=(proc.stdout + proc.stderr)[-3000:])
    if xml.exists():
        for case in ET.parse(xml).getroot().iter("testcase"):
            res.ran.append(case.get("name"))
            if case.find("failure") is not None or case.find("error") is not None:
                res.failed.setdefault(_suite(case.get("classname", "")), []).append(case.get("name"))
            elif case.find("skipped") is not None:
                res.skipped += 1
            else:
                res.passed += 1
    missing = [i for i in ids.split(",") if i and not any(f"[{i}]" in name for name in res.ran)]
    if missing and res.rc in (0, 1):
        raise RuntimeError(f"no test ran for {missing}: the declared ids changed; update the mutants")
    return res


def apply(copy: Path, m: Mutant) -> str:
    path = copy / m.file
    original = path.read_text()
    assert original.count(m.old) == 1, m.name
    path.write_text(original.replace(m.old, m.new))
    return original


def snapshot(folder: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def restore(folder: Path, snap: dict[Path, bytes]) -> None:
    for p in folder.rglob("*"):
        if p.is_file() and p not in snap:
            p.unlink()
    for p, data in snap.items():
        p.write_bytes(data)


_LOCK = threading.Lock()


def log(msg: str) -> None:
    with _LOCK:
        print(msg, flush=True)


def clean_run(copy: Path, i: int, ids: str, tier: str, suites: list[str]) -> dict:
    r = run_suites(copy, ids, tier, suites)
    ok = r.rc == 0 and not r.failed
    log(f"clean run {i}: {'pass' if ok else 'FAIL'} ({r.passed} passed, {r.skipped} skipped, "
        f"{sum(map(len, r.failed.values()))} failed) in {r.seconds:.0f} s" + ("" if ok else "\n" + r.tail))
    return {"run": i, "passed": ok, "rc": r.rc, "seconds": round(r.seconds, 1), "failed": r.failed}


def run_mutant(copy: Path, m: Mutant, tier: str, suites: list[str]) -> dict:
    ids = f"full,{m.ids}"
    row = {"mutant": m.name, "what": m.what, "file": m.file, "ids": ids}
    base_snap = snapshot(copy / "baselines")
    try:
        if m.perf:  # record this machine's perf entries on the unchanged copy, and check they pass unchanged
            rec = run_suites(copy, ids, tier, ["suites/test_throughput.py"], ["--kvcheck-update=perf"])
            ctl = run_suites(copy, ids, tier, ["suites/test_throughput.py"])
            row["perf_control"] = {"record_rc": rec.rc, "control_rc": ctl.rc, "control_failed": ctl.failed}
            log(f"  {m.name}: perf baseline recorded (rc {rec.rc}); unchanged control run rc {ctl.rc} "
                f"{ctl.failed or ''}")
        original = apply(copy, m)
        try:
            r = run_suites(copy, ids, tier, suites)
        finally:
            (copy / m.file).write_text(original)
    finally:
        restore(copy / "baselines", base_snap)
    crashed = r.rc not in (0, 1)
    row.update(rc=r.rc, seconds=round(r.seconds, 1), caught_by=r.caught_by, failed=r.failed, passed=r.passed,
               skipped=r.skipped, killed=bool(r.failed) or crashed, crashed=crashed)
    if crashed or not r.failed:
        row["tail"] = r.tail
    log(f"mutant {m.name} [{m.file}; {ids}]: {'killed' if row['killed'] else 'SURVIVED'} by "
        f"{r.caught_by or 'no suite'} (rc {r.rc}, {r.seconds:.0f} s)"
        + ("" if row["killed"] and not crashed else "\n" + r.tail))
    return row


def table(rows: list[dict]) -> str:
    head = f"{'mutant':20s} {'gated ids':40s} {'caught by (failing tests)':40s} {'time':>6s}"
    lines = [head, "-" * len(head)]
    for r in rows:
        caught = ", ".join(f"{s} ({len(t)})" for s, t in sorted(r["failed"].items())) or \
            ("CRASH rc %d" % r["rc"] if r["crashed"] else "SURVIVED")
        lines.append(f"{r['mutant']:20s} {r['ids']:40s} {caught:40s} {r['seconds']:5.0f}s")
    killed = sum(r["killed"] for r in rows)
    lines.append("-" * len(head))
    lines.append(f"kill rate: {killed}/{len(rows)} = {killed / max(1, len(rows)):.0%}")
    survivors = [r["mutant"] for r in rows if not r["killed"]]
    if survivors:
        lines.append(f"survived: {', '.join(survivors)}")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", help="comma-separated mutant names (default: all)")
    ap.add_argument("--tier", default="ci")
    ap.add_argument("--suites", default=GATED, help="comma-separated suite paths (default: the four gated suites)")
    ap.add_argument("--clean-runs", type=int, default=0, help="also run the unchanged copy this many times")
    ap.add_argument("--clean-ids", default=CLEAN_IDS, help="declared method ids of the clean runs")
    ap.add_argument("--no-mutants", action="store_true", help="only the clean runs")
    ap.add_argument("--jobs", type=int, default=1, help="runs at a time, each in its own copy (default 1)")
    ap.add_argument("--json", help="write every result to this file")
    ap.add_argument("--keep", action="store_true", help="keep the temporary copies")
    args = ap.parse_args(argv)

    mutants = [] if args.no_mutants else MUTANTS
    if args.only:
        names = set(args.only.split(","))
        unknown = names - {m.name for m in MUTANTS}
        if unknown:
            ap.error(f"unknown mutants {sorted(unknown)}; known: {', '.join(m.name for m in MUTANTS)}")
        mutants = [m for m in mutants if m.name in names]
    check_mutants(MUTANTS, ROOT)
    suites = [s for s in args.suites.split(",") if s]

    tmp = Path(tempfile.mkdtemp(prefix="kvcheck-mutants-"))
    copies = [make_copy(tmp / f"repo{j}") for j in range(max(1, args.jobs))]  # snapshots of the tree, now
    result = {"tier": args.tier, "suites": suites, "clean_ids": args.clean_ids, "jobs": len(copies)}
    tasks: queue.Queue = queue.Queue()
    for i in range(1, args.clean_runs + 1):
        tasks.put(("clean", i))
    for m in mutants:
        tasks.put(("mutant", m))
    clean, rows = [], []

    def worker(copy: Path) -> None:
        while True:
            try:
                kind, item = tasks.get_nowait()
            except queue.Empty:
                return
            try:
                if kind == "clean":
                    clean.append(clean_run(copy, item, args.clean_ids, args.tier, suites))
                else:
                    rows.append(run_mutant(copy, item, args.tier, suites))
            except Exception as exc:  # a broken run is reported, the others go on
                log(f"{kind} {getattr(item, 'name', item)}: {exc!r}")

    try:
        result["kvcheck_imported_from"] = [verify_import(c) for c in copies]
        log(f"copies: {', '.join(map(str, copies))}\nkvcheck imported from: {result['kvcheck_imported_from']}")
        log(f"{args.clean_runs} clean runs ({args.clean_ids}) and {len(mutants)} mutants, tier {args.tier}, "
            f"{len(copies)} at a time")
        t0 = time.perf_counter()
        threads = [threading.Thread(target=worker, args=(c,)) for c in copies]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        order = {m.name: k for k, m in enumerate(MUTANTS)}
        rows.sort(key=lambda r: order[r["mutant"]])
        clean.sort(key=lambda r: r["run"])
        result.update(clean_runs=clean, mutants=rows, total_seconds=round(time.perf_counter() - t0, 1))
        if rows:
            log("\n" + table(rows))
        if args.clean_runs:
            log(f"clean runs: {sum(r['passed'] for r in clean)}/{args.clean_runs} passed "
                f"({', '.join('pass' if r['passed'] else 'FAIL' for r in clean)})")
        log(f"total {result['total_seconds']:.0f} s")
    finally:
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    ok = len(clean) == args.clean_runs and all(r["passed"] for r in clean) and len(rows) == len(mutants)
    return 0 if ok and all(r["killed"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
