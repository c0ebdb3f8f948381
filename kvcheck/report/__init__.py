"""``kvcheck report``: one self-contained HTML page (and its PNGs) from kvcheck's JSON results.

Inputs, any mix of::

    kvcheck-report   pytest --kvcheck-report FILE             comparison rows of every suite
    kvcheck-eval     kvcheck eval --json FILE                 accuracy rows + per-sample records
    kvcheck-bench    kvcheck bench --json FILE                throughput points (ratios to full)

plus, optionally, a baseline folder (``--baselines``) whose ``accuracy/`` and ``drift/`` files hold
per-sample records. Where two inputs give the same value (same method, task or grid point), the one
read later wins: files in the order given, the baseline folder before all of them.

The page has four plots and a table:

1. accuracy vs compression ratio, one panel per task. Eviction methods sit at the ratio in their id
   (``-r<ratio>``: the fraction of the KV cache removed), one line per configuration; quantisation
   and other methods are separate markers (one per method, no line) at 1 − kv_ratio
   (fp16-equivalent bytes held / full's) measured in the inputs, or at the nominal 1 − bits/16 when
   none was measured; ``full`` is the dashed reference line.
2. output-length drift: a density of per-request diff% = (len_full − len_method) / len_full × 100 per
   method (negative: longer than full), from drift baselines or from ``kvcheck eval`` records.
3. throughput: prefill and decode time as ratios to full over the batch × length grid, the decode
   bound (the best decode ratio if decode is bound by bytes read) where known, and KV bytes / full;
   a panel only for what was measured, and bars per method when there is one grid point.
4. per-sample flips: methods × samples, right/wrong of each method against full's right/wrong.

Modules: ``load`` reads and checks the inputs; ``shape`` turns them into the data of each figure
(pure: dicts and lists in, dicts and lists out); ``plots`` draws one figure per function, through
``canvas`` (matplotlib imported lazily, Agg canvas only, no pyplot, no global backend change);
``html`` writes the page; ``build`` ties them together; ``ids`` reads methods (the ``method_name`` and
``params`` of report rows, or, for older files, ids through ``legacy``) and holds the styles every
figure shares.
"""
from __future__ import annotations

from .build import Result, build_report
from .canvas import kde, require_matplotlib
from .html import CAPTIONS, EMPTY, PLOTS, PNG_NAMES, render_html, summary_html
from .ids import (FAMILY_COLOURS, REFERENCE, MethodRef, config_key, family, method_kind, method_order,
                  nominal_kv_ratio, ratio, styles, task_order)
from .load import KINDS, Inputs, check_doc, load_baselines, load_inputs, read_json
from .plots import plot_accuracy, plot_drift, plot_flips, plot_throughput, throughput_panels
from .shape import (BOTH_RIGHT, BOTH_WRONG, CORRECT_AT, GAINED, LOST, NO_DATA, ONLY_RIGHT, ONLY_WRONG, STATUS_ORDER,
                    accuracy_data, drift_data, flip_data, measured_kv_ratios, summary_rows, throughput_data)

__all__ = [
    "BOTH_RIGHT", "BOTH_WRONG", "CAPTIONS", "CORRECT_AT", "EMPTY", "FAMILY_COLOURS", "GAINED", "KINDS", "LOST",
    "MethodRef",
    "NO_DATA", "ONLY_RIGHT", "ONLY_WRONG", "PLOTS", "PNG_NAMES", "REFERENCE", "STATUS_ORDER", "Inputs", "Result",
    "accuracy_data", "build_report", "check_doc", "config_key", "drift_data", "family", "flip_data", "kde",
    "load_baselines", "load_inputs", "measured_kv_ratios", "method_kind", "method_order", "nominal_kv_ratio",
    "plot_accuracy", "plot_drift", "plot_flips", "plot_throughput", "ratio", "read_json", "render_html",
    "require_matplotlib", "styles", "summary_html", "summary_rows", "task_order", "throughput_data",
    "throughput_panels",
]
