"""Unchanged code on other floating-point paths: do the gates hold wherever they run?

Runs ``pytest suites/`` (ci tier, ``-n 2``) against the committed baselines once per path and prints
one row per path: passed, failed, skipped, the rows that moved beyond their tolerance, the rows that
moved beyond their noise floor but within tolerance, and the wall time. Paths:

- ``default``: this machine as it is;
- ``avx2``: MKL and oneDNN held to their AVX2 code paths (``MKL_CBWR=AVX2 DNNL_MAX_CPU_ISA=AVX2``),
  the path of another x86 CPU generation;
- ``threads2``: two torch threads per process (``-o kvcheck_cpu_threads=2``): reductions split in
  another order;
- on a GPU (``--gpu``): ``rerun1`` … ``rerun5`` (the same run again: kernels whose sum order varies
  between runs), and ``layout3`` / ``layout4`` (other batch compositions, ``-o kvcheck_layout=N``).

Clean code must pass on every path. Exit status 1 when any path fails.

``--nightly`` runs the nightly selection (every declared setting) instead of the pre-merge one.

    python benchmarks/float_paths.py [--paths default,avx2,threads2] [--gpu] [--nightly] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PATHS = {
    "default": ({}, []),
    "avx2": ({"MKL_CBWR": "AVX2", "DNNL_MAX_CPU_ISA": "AVX2"}, []),
    "threads2": ({}, ["-o", "kvcheck_cpu_threads=2"]),
}
GPU_PATHS = {**{f"rerun{i}": ({}, ["--kvcheck-device", "cuda"]) for i in range(1, 6)},
             **{f"layout{v}": ({}, ["--kvcheck-device", "cuda", "-o", f"kvcheck_layout={v}"]) for v in (3, 4)}}


def run_path(name: str, env_extra: dict, args: list, suites: str, workers: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        cmd = [sys.executable, "-m", "pytest", suites, "-q", "-p", "no:cacheprovider", "-n", workers,
               "--kvcheck-report", str(report), *args]
        env = {**os.environ, **env_extra}
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        rows = json.loads(report.read_text())["rows"] if report.exists() else []
    tail = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr.strip()[-300:]
    failed = [r for r in rows if r["status"] in ("regressed", "missing")]
    noisy = [r for r in rows if r["status"] == "ok" and r.get("delta") and r.get("tolerance")
             and abs(r["delta"]) > 0.5 * r["tolerance"]]
    return {"path": name, "env": env_extra, "args": args, "rc": proc.returncode, "summary": tail,
            "wall_s": round(wall, 1), "rows": len(rows),
            "failed": [f"{r['method']} {r['suite']} {r['metric']} {r['baseline']}→{r['now']} (±{r['tolerance']})"
                       for r in failed],
            "over_half_tolerance": [f"{r['method']} {r['suite']} {r['metric']} Δ{r['delta']:+.4g} (±{r['tolerance']:.4g})"
                                    for r in noisy]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--paths", default="default,avx2,threads2", help="comma-separated: " + ", ".join(PATHS))
    ap.add_argument("--gpu", action="store_true", help="also the GPU paths: 5 reruns and 2 batch compositions")
    ap.add_argument("--suites", default="suites/", help="what pytest runs (default suites/)")
    ap.add_argument("-n", dest="workers", default="2", help="xdist workers per run (default 2)")
    ap.add_argument("--nightly", action="store_true", help="every declared setting (--kvcheck-nightly)")
    ap.add_argument("--json", help="write the results to this file")
    a = ap.parse_args(argv)
    table_extra = ["--kvcheck-nightly"] if a.nightly else []
    table = {**PATHS, **(GPU_PATHS if a.gpu else {})}
    names = [p for p in a.paths.split(",") if p] + ([p for p in GPU_PATHS] if a.gpu else [])
    unknown = [p for p in names if p not in table]
    if unknown:
        ap.error(f"unknown path(s) {', '.join(unknown)}; known: {', '.join(table)}")
    results = []
    for i, name in enumerate(names, 1):
        print(f"[{i}/{len(names)}] {name}: pytest {a.suites} -n {a.workers} {' '.join(table[name][1] + table_extra)}",
              file=sys.stderr, flush=True)
        env_extra, args = table[name]
        results.append(run_path(name, env_extra, args + table_extra, a.suites, a.workers))
        r = results[-1]
        print(f"  {r['summary']} ({r['wall_s']} s)", file=sys.stderr, flush=True)
    print(f"{'path':<10} {'result':<8} {'rows':>5} {'failed':>7} {'>½ tol':>7} {'wall s':>7}  pytest")
    for r in results:
        verdict = "pass" if r["rc"] == 0 else "FAIL"
        print(f"{r['path']:<10} {verdict:<8} {r['rows']:>5} {len(r['failed']):>7} {len(r['over_half_tolerance']):>7} "
              f"{r['wall_s']:>7}  {r['summary']}")
    for r in results:
        for line in r["failed"]:
            print(f"  {r['path']}: FAILED {line}")
        for line in r["over_half_tolerance"]:
            print(f"  {r['path']}: near its tolerance: {line}")
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0 if all(r["rc"] == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
