"""``kvcheck report``: an HTML page with plots (accuracy vs compression, length drift, throughput,
per-sample flips) and the regression table, from kvcheck's JSON results."""
from __future__ import annotations

import sys


def add_arguments(p) -> None:
    p.add_argument("files", nargs="*", metavar="FILE",
                   help="JSON results: pytest --kvcheck-report FILE, kvcheck eval --json, kvcheck bench --json")
    p.add_argument("--baselines", metavar="DIR",
                   help="baseline folder: per-sample records of its accuracy/ and drift/ files feed the flip "
                        "map and the drift densities")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for index.html and the PNGs")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args) -> int:
    from ..report import build_report

    result = build_report(args.files, args.out, baselines=args.baselines, quiet=args.quiet)
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    drawn = ", ".join(result.pngs) or "none"
    print(f"kvcheck report: wrote {result.index} (plots: {drawn}; {result.regressions} regressions)")
    return 0
