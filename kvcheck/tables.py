"""Fixed-width text tables and their HTML twin, from column specs (pure: no IO, nothing else from kvcheck).

A :class:`Column` says where a cell's value comes from, how it is written and how it is aligned;
:func:`render` lays out the header, an optional rule and one line per row::

    cols = [Column("method", "method", 40, clip=True), Column("accuracy", "accuracy", 8, ">", fmt=".3f")]
    render(cols, rows)   # ["method ... accuracy", "-----...", "snapkv-r0.5 ...    0.812", ...]
"""
from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence


@dataclass(frozen=True)
class Column:
    """One column.

    title: the header text. get: a row's value, as a dict key, an attribute name or a function of
    the row. width: the cell width (0: as wide as the text). align: ``"<"`` or ``">"``. fmt: a format
    spec (``".3f"``) or a function of the value; None is written as ``none``. clip: cut text longer
    than ``width``. gap: spaces before the column (ignored for the first).
    """

    title: str
    get: str | Callable[[Any], Any]
    width: int = 0
    align: str = "<"
    fmt: str | Callable[[Any], str] = ""
    none: str = "-"
    clip: bool = False
    gap: int = 1

    def value(self, row) -> Any:
        if callable(self.get):
            return self.get(row)
        if isinstance(row, dict):
            return row.get(self.get)
        return getattr(row, self.get)

    def text(self, row) -> str:
        """The cell's text, before padding."""
        v = self.value(row)
        if callable(self.fmt):
            s = self.fmt(v)
        elif v is None:
            s = self.none
        else:
            s = format(v, self.fmt)
        return s[:self.width] if self.clip and self.width else s

    def pad(self, text: str) -> str:
        return f"{text:{self.align}{self.width}s}"


def line(columns: Sequence[Column], cells: Sequence[str], indent: str = "") -> str:
    parts = [indent]
    for k, (col, cell) in enumerate(zip(columns, cells)):
        if k:
            parts.append(" " * col.gap)
        parts.append(col.pad(cell))
    return "".join(parts)


def render(columns: Sequence[Column], rows: Iterable, *, indent: str = "", rule: str | None = "-",
           header: bool = True) -> list[str]:
    """The header, a rule as long as the header (``rule=None``: none), then one line per row."""
    lines = []
    if header:
        head = line(columns, [c.title for c in columns], indent)
        lines.append(head)
        if rule:
            lines.append(rule * len(head))
    lines += [line(columns, [c.text(r) for c in columns], indent) for r in rows]
    return lines


def render_html(columns: Sequence[Column], rows: Iterable, row_class: Callable[[Any], str] | None = None) -> str:
    """A ``<table>`` of the same cells; left-aligned cells get ``class='l'``, each row ``row_class(row)``."""
    head = "<tr>" + "".join(f"<th>{html.escape(c.title)}</th>" for c in columns) + "</tr>"
    body = []
    for r in rows:
        cls = f" class='{html.escape(row_class(r))}'" if row_class else ""
        cells = "".join(f"<td class='l'>{html.escape(c.text(r))}</td>" if c.align == "<"
                        else f"<td>{html.escape(c.text(r))}</td>" for c in columns)
        body.append(f"<tr{cls}>{cells}</tr>")
    return f"<table>{head}{''.join(body)}</table>"


def number(spec: str = ".4g", none: str = "-") -> Callable[[Any], str]:
    """A formatter: ``none`` for None, else ``format(v, spec)``."""
    return lambda v: none if v is None else format(v, spec)
