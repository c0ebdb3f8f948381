"""The one table renderer: layouts of every table kvcheck prints, built from column specs."""
from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from kvcheck import baseline as bl
from kvcheck import summary
from kvcheck.tables import Column, number, render, render_html


def test_columns_pad_align_clip_and_format():
    cols = [Column("name", "name", 6, clip=True), Column("x", "x", 7, ">", ".2f"), Column("note", "note", gap=2)]
    rows = [{"name": "abcdefgh", "x": 1.234, "note": "ok"}, {"name": "a", "x": None, "note": ""}]
    assert render(cols, rows) == ["name         x  note", "--------------------", "abcdef    1.23  ok",
                                  "a            -  "]
    assert render(cols, rows, rule=None, indent="  ")[1] == "  abcdef    1.23  ok"
    assert render(cols, [], header=False) == []


def test_getters_keys_attributes_functions():
    class P:
        v = 3

    cols = [Column("v", "v", 2, ">"), Column("twice", lambda p: p.v * 2, 5, ">", "d")]
    assert render(cols, [P()], rule=None) == [" v twice", " 3     6"]


def test_html_twin_escapes_and_marks_left_cells():
    cols = [Column("m", "m"), Column("n", "n", align=">", fmt=number())]
    out = render_html(cols, [{"m": "<a>", "n": None}], row_class=lambda r: "ok")
    assert out == "<table><tr><th>m</th><th>n</th></tr><tr class='ok'><td class='l'>&lt;a&gt;</td><td>-</td></tr></table>"


def _baseline_layout(rows: list[bl.Row]) -> str:
    """baseline.format_rows rebuilt from columns: metric 34 wide, numbers 10 wide, status last."""
    status = Column("status", gap=2,
                    get=lambda r: r.status if r.direction == "equal" else f"{r.status} ({r.direction} is better)")
    cols = [Column("metric", "metric", 34), Column("baseline", "baseline", 10, ">", number()),
            Column("now", "now", 10, ">", number()), Column("Δ", "delta", 10, ">", number()),
            Column("tolerance", "tolerance", 10, ">", lambda t: "-" if t is None else f"±{t:.4g}"), status]
    return "\n".join(render(cols, rows, indent="  ", rule=None))


finite = st.floats(allow_nan=False, allow_infinity=False, width=32)
rows_ = st.lists(st.builds(bl.Row, method=st.just("m"), suite=st.just("s"),
                           metric=st.text("abc._-0123456789", min_size=1, max_size=40),
                           baseline=st.none() | finite, now=st.none() | finite | st.just(math.nan),
                           delta=st.none() | finite, tolerance=st.none() | finite.map(abs),
                           direction=st.sampled_from(["higher", "lower", "equal"]),
                           status=st.sampled_from(["ok", "regressed", "improved", "new", "missing"])), max_size=5)


@given(rows_)
def test_reproduces_baseline_format_rows(rows):
    assert _baseline_layout(rows) == bl.format_rows(rows)


def test_summary_names_the_invocations_test_paths():
    row = {"method": "full", "suite": "fidelity", "metric": "kl", "baseline": 0.0, "now": 1.0, "delta": 1.0,
           "tolerance": 0.1, "direction": "lower", "status": "regressed"}
    lines = summary.render([row], paths=["tests/kvcheck/test_fidelity.py::test_fidelity[full]", "tests/kvcheck",
                                         "-x", "tests/kvcheck"])
    assert lines[-1].startswith("accept intended changes with: pytest tests/kvcheck/test_fidelity.py tests/kvcheck "
                                "--kvcheck-update=all  (add -k METHOD_ID")
    assert lines[-2] == "kvcheck: 1 regressed (1 comparisons)"
    assert "REGRESSED" in lines[2] and len(lines[0]) == len(lines[1])
    assert "pytest --kvcheck-update=all" in summary.render([row])[-1]  # no paths: rerun pytest's own default

    class Config:
        args = ["suites/"]

    class Session:
        config = Config

    assert "pytest suites/ --kvcheck-update=all" in summary.render([row], Session)[-1]  # the older call
    assert summary.render([{**row, "status": "ok"}], paths=["x"])[-1] == "kvcheck: 1 ok (1 comparisons)"
