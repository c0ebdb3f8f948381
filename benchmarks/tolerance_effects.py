"""Tolerances beside the effects they gate, from the committed baselines (no model is run).

For each suite and metric: the tolerance (median over methods), the measured noise floor (largest),
and the effect of compression, |method − full|, over the declared methods (median and smallest
non-zero). The rule is noise floor ≤ tolerance ≤ half the smallest effect the row claims to catch; a
row where the tolerance covers the whole effect of some methods says how many.

It also lists the rows that cannot fail in one direction (an accuracy at 0 can only improve) and,
per task, the eviction methods that do not beat ``random`` at the same ratio (beyond one sample).

    python benchmarks/tolerance_effects.py [--baselines baselines/smollm2-135m-instruct/ci-float32]
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT / "baselines" / "smollm2-135m-instruct" / "ci-float32"
RATIO = re.compile(r"-r(0\.\d+)")


def load(folder: Path) -> dict[str, dict[str, dict]]:
    """{suite: {method_id: document}} of every baseline file under ``folder``."""
    out: dict[str, dict[str, dict]] = {}
    for path in sorted(folder.glob("*/*.json")):
        doc = json.loads(path.read_text())
        out.setdefault(path.parent.name, {})[doc["key"].get("method_id", path.stem)] = doc
    return out


def rows(suites: dict[str, dict[str, dict]]) -> list[dict]:
    """One row per suite and metric: tolerance, noise, effects over methods against full."""
    out = []
    for suite, docs in sorted(suites.items()):
        full = docs.get("full", {}).get("metrics", {})
        names = sorted({n for d in docs.values() for n in d.get("metrics", {})})
        for name in names:
            tols, noise, effects, covered = [], [], [], 0
            for mid, d in docs.items():
                m = d.get("metrics", {}).get(name)
                if mid == "full" or m is None or m.get("value") is None:
                    continue
                tols.append(m.get("tolerance") or 0.0)
                noise.append(m.get("noise") or 0.0)
                ref = (full.get(name) or {}).get("value")
                if ref is not None:
                    e = abs(m["value"] - ref)
                    effects.append(e)
                    covered += e > 0 and e <= (m.get("tolerance") or 0.0)
            if not tols:
                continue
            nonzero = [e for e in effects if e > 0]
            out.append({"suite": suite, "metric": name, "methods": len(tols), "tolerance": statistics.median(tols),
                        "noise": max(noise), "effect_median": statistics.median(effects) if effects else None,
                        "effect_min": min(nonzero) if nonzero else None, "covered": covered})
    return out


def dead_rows(suites: dict[str, dict[str, dict]]) -> list[str]:
    """Rows already at the end of their range in the failing direction's opposite: they cannot fail."""
    out = []
    for suite, docs in sorted(suites.items()):
        for mid, d in sorted(docs.items()):
            for name, m in sorted(d.get("metrics", {}).items()):
                v, direction = m.get("value"), m.get("direction")
                if v is None:
                    continue
                if (name.endswith("accuracy") or name.startswith("share_")) and (
                        (direction == "higher" and v <= 0.0) or (direction == "lower" and v >= 1.0)):
                    out.append(f"{suite} {mid} {name} = {v:g}: cannot move in the failing direction")
    return out


def below_random(suites: dict[str, dict[str, dict]]) -> list[str]:
    """Eviction methods whose task accuracy is not above ``random`` at the same ratio (one sample of slack)."""
    docs = suites.get("accuracy", {})
    randoms = {RATIO.search(m).group(1): d for m, d in docs.items() if m.startswith("random-") and RATIO.search(m)}
    out = []
    for mid, d in sorted(docs.items()):
        r = RATIO.search(mid)
        if mid.startswith("random-") or not r or r.group(1) not in randoms:
            continue
        for name, m in sorted(d["metrics"].items()):
            base = randoms[r.group(1)]["metrics"].get(name)
            if base is None or not name.endswith(".accuracy"):
                continue
            if m["value"] <= base["value"]:
                out.append(f"{mid} {name}: {m['value']:.3f} ≤ random-r{r.group(1)} {base['value']:.3f}")
    return out


def fmt(v) -> str:
    return "-" if v is None else f"{v:.4g}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baselines", type=Path, default=DEFAULT, help="a <model>/<tier>-<dtype> baseline folder")
    args = ap.parse_args(argv)
    if not args.baselines.is_dir():
        print(f"tolerance_effects: no baseline folder {args.baselines}; pass --baselines <model>/<tier>-<dtype>",
              file=sys.stderr)
        return 2
    suites = load(args.baselines)
    print(f"{'suite':<11} {'metric':<28} {'n':>3} {'tolerance':>10} {'noise':>9} {'effect med':>11} "
          f"{'effect min':>11}  tol ≤ ½ min effect  covered")
    for r in rows(suites):
        ok = r["effect_min"] is None or r["tolerance"] <= r["effect_min"] / 2
        print(f"{r['suite']:<11} {r['metric'][:28]:<28} {r['methods']:>3} {fmt(r['tolerance']):>10} {fmt(r['noise']):>9} "
              f"{fmt(r['effect_median']):>11} {fmt(r['effect_min']):>11}  {'yes' if ok else 'NO':<18} {r['covered']}")
    dead = dead_rows(suites)
    print(f"\nrows that cannot fail ({len(dead)}):")
    for line in dead:
        print("  " + line)
    below = below_random(suites)
    print(f"\nwhere an eviction method does not beat random at its ratio ({len(below)}):")
    for line in below:
        print("  " + line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
