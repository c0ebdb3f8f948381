"""The whole report: read, shape, draw, write ``index.html`` and the PNGs."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import KvcheckError
from ..io import write_bytes_atomic
from ..judge import FAILING
from .canvas import require_matplotlib
from .html import PLOTS, PNG_NAMES, render_html
from .ids import REFERENCE
from .load import load_baselines, load_inputs
from .plots import plot_accuracy, plot_drift, plot_flips, plot_throughput
from .shape import accuracy_data, drift_data, flip_data, summary_rows, throughput_data

@dataclass
class Result:
    index: Path
    pngs: dict  # plot name → path written
    regressions: int
    notes: list


def build_report(paths, out, baselines=None, quiet: bool = False) -> Result:
    """Read the inputs, draw the plots, write ``out/index.html`` and ``out/kvcheck-<plot>.png``.
    A plot without data gets a note in the page and no PNG (a stale one from an earlier run is removed)."""
    from ..progress import bar

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise KvcheckError(f"--out {out} is a file; pass a folder for index.html and the PNGs.")
    inputs = load_inputs(paths)
    if baselines is not None:
        load_baselines(inputs, baselines)
    require_matplotlib()  # fail before any work when it is missing
    shaped = {"accuracy": accuracy_data(inputs), "drift": drift_data(inputs),
              "throughput": throughput_data(inputs), "flips": flip_data(inputs)}
    drawers = {"accuracy": plot_accuracy, "drift": plot_drift, "throughput": plot_throughput, "flips": plot_flips}
    notes = shaped["accuracy"]["notes"] + shaped["drift"]["notes"]
    if shaped["flips"]["methods"] and not shaped["flips"]["reference"]:
        notes.append(f"no {REFERENCE} records among the per-sample inputs: the flip map shows right/wrong only")
    pngs: dict[str, bytes | None] = {}
    with bar(len(PLOTS) + 1, "kvcheck report", quiet, unit="plot") as pb:
        pb.unit = "plot"
        for name in PLOTS:
            pb.set_postfix_str(name)
            pngs[name] = drawers[name](shaped[name])
            pb.update(1)
        out.mkdir(parents=True, exist_ok=True)
        written = {}
        for name, data in pngs.items():
            path = out / PNG_NAMES[name]
            if data:
                write_bytes_atomic(path, data)
                written[name] = path
            elif path.exists():
                path.unlink()
        rows = summary_rows(inputs)
        index = out / "index.html"
        write_bytes_atomic(index, render_html(inputs, pngs, rows, notes).encode("utf-8"))
        pb.update(1)
    return Result(index, written, sum(r["status"] in FAILING for r in rows), notes)
