"""The kvcheck table printed once at the end of a pytest session (pure formatting)."""
from __future__ import annotations

import shlex
from collections import Counter
from typing import Sequence

from .judge import FAILING, STATUSES
from .tables import Column, number
from .tables import render as render_table


def _status(s: str) -> str:
    return s.upper() if s in FAILING else s


COLUMNS = (
    Column("method", "method", 44, clip=True),
    Column("suite", "suite", 11),
    Column("metric", "metric", 30, clip=True),
    Column("baseline", "baseline", 9, ">", number()),
    Column("now", "now", 9, ">", number()),
    Column("Δ", "delta", 9, ">", number()),
    Column("tol", "tolerance", 8, ">", lambda t: "-" if t is None else f"±{t:.3g}"),
    Column("status", "status", fmt=_status, gap=2),
)


def arg_paths(args: Sequence[str]) -> list[str]:
    """The files and folders of pytest's arguments (node ids cut at ``::``), each once, in order."""
    return list(dict.fromkeys(str(a).split("::", 1)[0] for a in args if str(a) and not str(a).startswith("-")))


def accept_command(paths: Sequence[str] = ()) -> str:
    """``pytest PATHS --kvcheck-update=all``: the run that accepts this session's changes."""
    return " ".join(["pytest", *(shlex.quote(p) for p in arg_paths(paths)), "--kvcheck-update=all"])


def render(rows: list[dict], session=None, *, paths: Sequence[str] | None = None) -> list[str]:
    """The table, the counts and, after a regression, how to accept it. ``paths`` are the test paths
    the accept hint names (default: the session's invocation arguments; ``session`` is accepted for
    callers of the older signature and read only for that)."""
    if paths is None:
        paths = list(getattr(getattr(session, "config", None), "args", None) or [])
    lines = render_table(COLUMNS, rows)
    counts = Counter(r["status"] for r in rows)
    lines.append("-" * len(lines[0]))
    lines.append("kvcheck: " + ", ".join(f"{counts[k]} {k}" for k in STATUSES if counts[k])
                 + f" ({len(rows)} comparisons)")
    if counts["cannot-fail"]:
        lines.append(f"{counts['cannot-fail']} rows cannot fail: their baseline is within tolerance of the end of "
                     "the metric's range (e.g. accuracy 0), so they pass without gating anything")
    if counts["below-random"]:
        lines.append(f"{counts['below-random']} rows below random: an eviction method that did not beat random at its "
                     "ratio on a task when its baseline was recorded (README lists them); they gate nothing")
    if counts["improved"]:
        lines.append(f"{counts['improved']} improved beyond tolerance (passing): review them, and ratchet the "
                     "baselines with --kvcheck-update=all if the gain is real")
    if any(counts[k] for k in FAILING):
        lines.append(f"accept intended changes with: {accept_command(paths)}  (add -k METHOD_ID to narrow), "
                     "then review `git diff baselines/`")
    return lines
