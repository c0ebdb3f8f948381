"""The kvcheck table printed once at the end of a pytest session (pure formatting)."""
from __future__ import annotations

from collections import Counter


def _f(v) -> str:
    return "-" if v is None else f"{v:.4g}"


def render(rows: list[dict], session) -> list[str]:
    head = f"{'method':44s} {'suite':11s} {'metric':30s} {'baseline':>9s} {'now':>9s} {'Δ':>9s} {'tol':>8s}  status"
    lines = [head, "-" * len(head)]
    for r in rows:
        tol = "-" if r["tolerance"] is None else f"±{r['tolerance']:.3g}"
        status = r["status"].upper() if r["status"] in ("regressed", "missing") else r["status"]
        lines.append(f"{r['method'][:44]:44s} {r['suite']:11s} {r['metric'][:30]:30s} {_f(r['baseline']):>9s} "
                     f"{_f(r['now']):>9s} {_f(r['delta']):>9s} {tol:>8s}  {status}")
    counts = Counter(r["status"] for r in rows)
    lines.append("-" * len(head))
    lines.append("kvcheck: " + ", ".join(f"{counts[k]} {k}" for k in ("regressed", "missing", "new", "improved", "ok")
                                         if counts[k]) + f" ({len(rows)} comparisons)")
    if counts["regressed"] or counts["missing"]:
        lines.append("accept intended changes with: pytest suites/ --kvcheck-update=all  (add -k METHOD_ID to narrow), "
                     "then review `git diff baselines/`")
    return lines
