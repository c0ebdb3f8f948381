"""The four figures, one function each: shaped data in (see :mod:`kvcheck.report.shape`), PNG bytes
out, or None when there is nothing to draw."""
from __future__ import annotations

import math
import statistics

from .canvas import figure, kde, png
from .ids import FAMILY_COLOURS, MARKERS, REFERENCE, config_key, method_kind, method_order, styles
from .load import is_num
from .shape import BOTH_RIGHT, BOTH_WRONG, GAINED, LOST, NO_DATA, ONLY_RIGHT, ONLY_WRONG, task_of

QUANT_MARKERS = ["D", "p", "h", "8", "d", "H", "*", "X"]  # quantisation methods in the accuracy plot

def plot_accuracy(data: dict) -> bytes | None:
    tasks = {t: v for t, v in data["tasks"].items() if any(m in data["x"] for m in v)}
    if not tasks:
        return None
    from matplotlib.lines import Line2D

    refs = data.get("refs", {})
    ref = lambda m: refs.get(m, m)  # noqa: E731
    st = styles(data["x"], refs)
    n = len(tasks)
    cols = 2 if n == 4 else min(3, n)
    rows = math.ceil(n / cols)
    fig = figure(max(10.0, 4.6 * cols + 2.8), 3.6 * rows + 0.5)
    axes = fig.subplots(rows, cols, squeeze=False, sharey=True)
    handles: dict[str, object] = {}
    ordered = sorted(data["x"], key=lambda m: method_order(ref(m)))
    for ax, (task, per) in zip(axes.flat, tasks.items()):
        per = {m: per[m] for m in ordered if m in per}
        ax.set_title(task, fontsize=11)
        full = per.get(REFERENCE)
        if full:
            ax.axhline(full["accuracy"], color=FAMILY_COLOURS["full"], linestyle="--", linewidth=1.2, zorder=1)
            ax.plot([0.0], [full["accuracy"]], marker="*", markersize=12, color=FAMILY_COLOURS["full"], zorder=4)
            handles.setdefault("full (no compression)", Line2D([], [], color=FAMILY_COLOURS["full"], linestyle="--",
                                                                marker="*", markersize=10))
        lines: dict[str, list] = {}
        for m, v in per.items():
            if m in data["x"] and method_kind(ref(m)) == "eviction":
                lines.setdefault(config_key(ref(m)), []).append((data["x"][m][0], v["accuracy"], m))
        line_ids = sorted(lines, key=lambda k: method_order(ref(lines[k][0][2])))
        first = {k: lines[k][0][2] for k in line_ids}  # one member styles its whole line
        member_st = styles(first.values(), refs)
        for key in line_ids:
            pts = sorted(lines[key])
            s = member_st[first[key]]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], color=s["colour"], linestyle=s["linestyle"],
                    marker=s["marker"], markersize=7, linewidth=2, alpha=0.85, zorder=3)
            handles.setdefault(f"{key} (eviction)", Line2D([], [], color=s["colour"], linestyle=s["linestyle"],
                                                           marker=s["marker"], linewidth=2))
        for m, v in per.items():
            if m in data["x"] and method_kind(ref(m)) == "other":
                x, source = data["x"][m]
                s = st[m]
                hollow = source != "measured kv_ratio"
                marker = QUANT_MARKERS[MARKERS.index(s["marker"]) % len(QUANT_MARKERS)]
                # filled markers get a white rim so methods at the same point stay visible
                look = dict(color=s["colour"], marker=marker, linestyle="none", alpha=0.85,
                            markeredgewidth=2 if hollow else 1.2, markerfacecolor="white" if hollow else s["colour"],
                            markeredgecolor=s["colour"] if hollow else "white")
                ax.plot([x], [v["accuracy"]], markersize=11, zorder=4, **look)
                label = f"{m} (nominal 1 − bits/16)" if hollow else m
                handles.setdefault(label, Line2D([], [], markersize=9, **look))
        for m, v in per.items():
            if v["regressed"] and m in data["x"]:
                x = data["x"][m][0]
                ax.plot([x], [v["accuracy"]], marker="o", markersize=16, markerfacecolor="none",
                        markeredgecolor="#d62728", markeredgewidth=2, linestyle="none", zorder=5)
                if is_num(v["baseline"]):
                    ax.plot([x, x], [v["baseline"], v["accuracy"]], color="#d62728", linewidth=1, linestyle=":",
                            zorder=2)
                    ax.plot([x], [v["baseline"]], marker="_", markersize=14, color="#d62728", markeredgewidth=2,
                            zorder=5)
                handles.setdefault("regressed (— baseline value)", Line2D(
                    [], [], marker="o", markersize=12, markerfacecolor="none", markeredgecolor="#d62728",
                    markeredgewidth=2, linestyle="none"))
        ax.set_xlim(-0.04, 1.0)
        ax.set_ylim(-0.04, 1.08)
        ax.grid(True, alpha=0.3)
        ax.set_xlabel("compression ratio (fraction of KV cache removed)")
    for ax in axes[:, 0]:
        ax.set_ylabel("accuracy")
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    fig.legend(list(handles.values()), list(handles), loc="outside right upper", fontsize=8, frameon=False,
               title="eviction: one line per configuration\nquantisation: one marker per method\nat 1 − measured kv_ratio",
               title_fontsize=8, alignment="left")
    fig.suptitle("Accuracy vs compression ratio", fontsize=13, fontweight="bold")
    return png(fig)


def plot_drift(data: dict) -> bytes | None:
    import numpy as np

    sources = data["sources"]
    if not sources and not data["medians"]:
        return None
    panels = list(sources.items()) or [("report median diff% (no per-request data)", None)]
    every = [m for _, per in panels if per for m in per] or list(data["medians"])
    refs = data.get("refs", {})
    st = styles(every, refs)
    n_rows = max(len(per) if per else len(data["medians"]) for _, per in panels)
    cols = min(2, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig = figure(max(9.5, 7.4 * cols), (0.52 * max(n_rows, 3) + 1.9) * rows)
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, (title, per) in zip(axes.flat, panels):
        if per is None:  # medians only: one dot per method
            ms = sorted(data["medians"], key=lambda m: method_order(refs.get(m, m)), reverse=True)
            vals = [data["medians"][m] for m in ms]
            lo, hi = min(vals + [0.0]), max(vals + [0.0])
            pad = max(5.0, 0.1 * (hi - lo))
            ax.set_xlim(lo - pad, hi + pad)
            for k, m in enumerate(ms):
                ax.plot([0, data["medians"][m]], [k, k], color=st[m]["colour"], linewidth=2)
                ax.plot([data["medians"][m]], [k], marker="o", markersize=8, color=st[m]["colour"])
            ax.set_yticks(range(len(ms)), ms, fontsize=8)
            ax.set_ylim(-0.7, len(ms) - 0.3)
        else:
            ms = sorted(per, key=lambda m: method_order(refs.get(m, m)), reverse=True)
            allv = [v for m in ms for v in per[m]]
            lo, hi = min(allv + [0.0]), max(allv + [0.0])
            pad = max(5.0, 0.12 * (hi - lo))
            grid = np.linspace(lo - pad, hi + pad, 400)
            for k, m in enumerate(ms):
                d = kde(per[m], grid)
                d = d / d.max() * 0.85
                c = st[m]["colour"]
                ax.fill_between(grid, k, k + d, color=c, alpha=0.35, linewidth=0, zorder=2 + 0.01 * k)
                ax.plot(grid, k + d, color=c, linewidth=1.6, zorder=3)
                ax.plot(per[m], [k + 0.04] * len(per[m]), linestyle="none", marker="|", markersize=9, color=c,
                        alpha=0.8, zorder=3)
                med = statistics.median(per[m])
                ax.plot([med, med], [k, k + 0.85], color=c, linewidth=2.2, linestyle=(0, (2, 1)), zorder=4)
                share = sum(v <= -20.0 for v in per[m]) / len(per[m])
                ax.text(1.01, k + 0.3, f"median {med:+.0f}%\n≥20% longer: {share:.0%}\nn={len(per[m])}",
                        transform=ax.get_yaxis_transform(), ha="left", va="center", fontsize=7, color="#333333")
            ax.set_xlim(grid[0], grid[-1])
            ax.set_yticks(range(len(ms)), ms, fontsize=8)
            ax.set_ylim(-0.25, len(ms) + 0.05)
        ax.axvline(0, color="black", linewidth=1.2, zorder=5)
        ax.set_title(title, fontsize=10, pad=16)
        ax.set_xlabel("diff% = (len_full − len_method) / len_full × 100")
        ax.grid(True, axis="x", alpha=0.3)
        ax.annotate("← longer than full", xy=(0, 1.0), xycoords=("data", "axes fraction"), xytext=(-4, 2),
                    textcoords="offset points", ha="right", va="bottom", fontsize=8, color="#b22222")
        ax.annotate("shorter than full →", xy=(0, 1.0), xycoords=("data", "axes fraction"), xytext=(4, 2),
                    textcoords="offset points", ha="left", va="bottom", fontsize=8, color="#1f5f99")
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.suptitle("Output-length drift per method\n" + ("(density scaled to its peak; dashed: median; ticks: requests)"
                 if sources else "(median diff% from the report; per-request densities need --baselines or eval "
                 "records)"), fontsize=12, fontweight="bold")
    return png(fig)


def _grid_label(pt) -> str:
    return f"b{pt[0]}\nL{pt[1]}"


def _throughput_bars(data: dict, panels, st) -> bytes:
    """One grid point only: a bar per method (methods down the side) in each panel."""
    pt = data["points"][0]
    ms = [m for m in data["methods"] if any(name in data["methods"][m].get(pt, {}) for name, _ in panels)][::-1]
    fig = figure(max(7.5, 3.6 * len(panels) + 2.6), 0.26 * len(ms) + 1.9)
    axes = fig.subplots(1, len(panels), squeeze=False, sharey=True)[0]
    for ax, (name, title) in zip(axes, panels):
        vals = [data["methods"][m].get(pt, {}).get(name) for m in ms]
        ax.barh(range(len(ms)), [v or 0.0 for v in vals], color=[st[m]["colour"] for m in ms], height=0.7)
        for k, v in enumerate(vals):
            ax.text(v or 0.0, k, f" {v:.2f}" if v is not None else " -", va="center", fontsize=7)
        ax.axvline(1.0, color=FAMILY_COLOURS["full"], linestyle="--", linewidth=1.2)
        ax.set_xlim(0, max([1.0] + [v for v in vals if v is not None]) * 1.18)
        ax.set_title(title + (" (lower is faster)" if name != "kv_ratio" else " (lower is smaller)"), fontsize=10)
        ax.set_xlabel("ratio to full (dashed: full = 1)")
        ax.grid(True, axis="x", alpha=0.3)
    axes[0].set_yticks(range(len(ms)), ms, fontsize=8)
    axes[0].set_ylim(-0.6, len(ms) - 0.4)
    fig.suptitle(f"Relative to full at batch {pt[0]}, prompt length {pt[1]}\n(the only batch × length point in the inputs)",
                 fontsize=12, fontweight="bold")
    return png(fig)


THROUGHPUT_PANELS = (("prefill_ratio", "Prefill time / full's"), ("decode_ratio", "Decode step time / full's"),
                     ("kv_ratio", "KV bytes held / full's"))


def throughput_panels(data: dict) -> list[tuple[str, str]]:
    """``(metric, title)`` of the throughput panels that have data (a CPU ci run measures kv_ratio only)."""
    names = {name for per in data["methods"].values() for v in per.values() for name in v}
    return [(n, t) for n, t in THROUGHPUT_PANELS if n in names]


def plot_throughput(data: dict) -> bytes | None:
    panels = throughput_panels(data)
    if not panels:
        return None
    st = styles(data["methods"], data.get("refs"))
    if len(data["points"]) == 1:
        return _throughput_bars(data, panels, st)
    from matplotlib.lines import Line2D

    points = data["points"]
    xpos = {pt: k for k, pt in enumerate(points)}
    fig = figure(4.3 * len(panels) + 3.2, 4.4)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    any_bound = False
    for ax, (name, title) in zip(axes, panels):
        ax.axhline(1.0, color=FAMILY_COLOURS["full"], linestyle="--", linewidth=1.2)
        top = 1.0
        for m, per in data["methods"].items():
            pts = [pt for pt in points if name in per.get(pt, {})]
            if not pts:
                continue
            s = st[m]
            top = max(top, *(per[pt][name] for pt in pts))
            for b in sorted({pt[0] for pt in pts}):  # one line per batch size, over lengths
                seg = [pt for pt in pts if pt[0] == b]
                ax.plot([xpos[pt] for pt in seg], [per[pt][name] for pt in seg], color=s["colour"],
                        linestyle=s["linestyle"], marker=s["marker"], markersize=7, linewidth=2, alpha=0.9)
            if name == "decode_ratio":
                bounds = [(xpos[pt], 1.0 / per[pt]["decode_bound"]) for pt in points
                          if is_num(per.get(pt, {}).get("decode_bound")) and per[pt]["decode_bound"] > 0]
                if bounds:
                    any_bound = True
                    ax.plot([b[0] for b in bounds], [b[1] for b in bounds], linestyle="none", marker="_",
                            markersize=26, markeredgewidth=2, color=s["colour"], alpha=0.6)
        for k in range(1, len(points)):
            if points[k][0] != points[k - 1][0]:
                ax.axvline(k - 0.5, color="#999999", linewidth=0.8)
        ax.set_xticks(range(len(points)), [_grid_label(pt) for pt in points])
        ax.set_xlim(-0.5, len(points) - 0.5)
        ax.set_ylim(0, top * 1.12)
        ax.set_title(title + (" (lower is faster)" if name != "kv_ratio" else ""), fontsize=10)
        ax.set_xlabel("batch (b) × prompt length (L)")
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel("ratio to full (1 = same as full)")
    handles = [Line2D([], [], color=FAMILY_COLOURS["full"], linestyle="--", label="full (= 1)")]
    handles += [Line2D([], [], color=s["colour"], linestyle=s["linestyle"], marker=s["marker"], linewidth=2, label=m)
                for m, s in st.items()]
    if any_bound:
        handles.append(Line2D([], [], color="#555555", linestyle="none", marker="_", markersize=16, markeredgewidth=2.5,
                              label="decode bound: 1 / decode_bound\n(best ratio if bound by bytes read)"))
    fig.legend(handles=handles, loc="outside right upper", fontsize=8, frameon=False)
    fig.suptitle("Throughput relative to full, over batch × length", fontsize=13, fontweight="bold")
    return png(fig)


_CELL_COLOURS = {BOTH_RIGHT: "#cfe8cf", BOTH_WRONG: "#9e9e9e", LOST: "#d62728", GAINED: "#1f77b4",
                 NO_DATA: "#f4f4f4", ONLY_RIGHT: "#cfe8cf", ONLY_WRONG: "#9e9e9e"}
_CELL_LABELS = {BOTH_RIGHT: "right (full right too)", BOTH_WRONG: "wrong (full wrong too)",
                LOST: "flip right → wrong", GAINED: "flip wrong → right", NO_DATA: "no record",
                ONLY_RIGHT: "right", ONLY_WRONG: "wrong"}


def plot_flips(data: dict) -> bytes | None:
    if not data["methods"] or not data["samples"]:
        return None
    import numpy as np
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    samples, methods = data["samples"], data["methods"]
    codes = sorted(_CELL_COLOURS)
    cmap = ListedColormap([_CELL_COLOURS[c] for c in codes])
    grid = np.array(data["cells"], dtype=float)
    n, k = len(samples), len(methods)
    width = min(20.0, max(9.0, 0.16 * n + 5.0))
    fig = figure(width, 0.4 * k + 2.6)
    ax = fig.subplots()
    ax.imshow(grid, cmap=cmap, vmin=min(codes) - 0.5, vmax=max(codes) + 0.5, aspect="auto", interpolation="nearest")
    ax.set_xticks(np.arange(n + 1) - 0.5, minor=True)
    ax.set_yticks(np.arange(k + 1) - 0.5, minor=True)
    ax.grid(which="minor", color="white", linewidth=0.8 if n <= 120 else 0)
    ax.tick_params(which="minor", length=0)
    ax.set_yticks(range(k), methods, fontsize=9)
    tasks = [task_of(s) for s in samples]
    starts = [j for j in range(n) if j == 0 or tasks[j] != tasks[j - 1]]
    for j in starts[1:]:
        ax.axvline(j - 0.5, color="black", linewidth=1.5)
    if n <= 80:
        nums = [str(s).rsplit("-", 1)[-1] for s in samples]
        ax.set_xticks(range(n), [str(int(t)) if t.isdigit() else t for t in nums], fontsize=7, rotation=0 if n <= 40 else 90)
    else:
        ax.set_xticks([])
    for a, b in zip(starts, starts[1:] + [n]):
        ax.text((a + b - 1) / 2, -0.7, tasks[a] or "samples", ha="center", va="bottom", fontsize=9,
                fontweight="bold")
    for row, m in enumerate(methods):
        lost, gained = data["counts"][m]
        if data["reference"]:
            ax.text(n - 0.3, row, f"  −{lost} / +{gained}", va="center", ha="left", fontsize=9,
                    color="#d62728" if lost else "#333333")
    ax.set_xlabel("sample (grouped by task; tick: sample number)")
    used = sorted({int(c) for row in data["cells"] for c in row})
    fig.legend(handles=[Patch(facecolor=_CELL_COLOURS[c], edgecolor="#666666", label=_CELL_LABELS[c]) for c in used],
               loc="outside lower center", ncol=len(used), fontsize=9, frameon=False)
    title = ("Per-sample flips vs full (right column: −right→wrong / +wrong→right)" if data["reference"]
             else "Per-sample right/wrong (no full records in the inputs, so no flips)")
    fig.suptitle(title, fontsize=12, fontweight="bold")
    return png(fig)

