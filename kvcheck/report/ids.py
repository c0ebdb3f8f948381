"""Method ids as the report reads them (family, eviction ratio, nominal bits), their order, and one
plotting style per method that every figure shares."""
from __future__ import annotations

import re

REFERENCE = "full"

_RATIO_PART = re.compile(r"^r(\d+(?:\.\d+)?)$")
_BITS_PART = re.compile(r"^b(\d+)$")
_FP_FAMILY = re.compile(r"^fp(\d+)$")


def family(method_id: str) -> str:
    """The method's name: the id up to its first ``-`` (``snapkv-r0.5-w16`` → ``snapkv``)."""
    return method_id.split("-", 1)[0]


def ratio(method_id: str) -> float | None:
    """The eviction compression ratio in the id (``-r0.5`` → 0.5), or None for other methods."""
    for part in method_id.split("-")[1:]:
        m = _RATIO_PART.match(part)
        if m:
            return float(m.group(1))
    return None


def config_key(method_id: str) -> str:
    """The id without its ratio part: the methods that make one line of the accuracy plot."""
    parts = method_id.split("-")
    return "-".join([parts[0]] + [p for p in parts[1:] if not _RATIO_PART.match(p)])


def nominal_kv_ratio(method_id: str) -> float | None:
    """bits / 16 from a ``-b<bits>`` part or an ``fp<bits>`` name; None when the id names no bits."""
    fam = _FP_FAMILY.match(family(method_id))
    if fam:
        return int(fam.group(1)) / 16
    for part in method_id.split("-")[1:]:
        m = _BITS_PART.match(part)
        if m:
            return int(m.group(1)) / 16
    return None


def method_kind(method_id: str) -> str:
    if method_id == REFERENCE:
        return "full"
    return "eviction" if ratio(method_id) is not None else "other"


def method_order(method_id: str) -> tuple:
    """Full first, then eviction methods by name and ratio, then the rest by name."""
    kind = {"full": 0, "eviction": 1, "other": 2}[method_kind(method_id)]
    return (kind, family(method_id), config_key(method_id), ratio(method_id) or 0.0, method_id)


# One colour per method family, the same in every plot and every report; red and grey are kept for
# regressions and missing data.
FAMILY_COLOURS = {
    "full": "#222222", "snapkv": "#1f77b4", "streaming_llm": "#ff7f0e", "kivi": "#2ca02c", "h2o": "#9467bd",
    "tova": "#8c564b", "pyramidkv": "#17becf", "knorm": "#bcbd22", "random": "#e377c2", "fp8": "#393b79",
    "int": "#637939",
}
_SPARE_COLOURS = ["#5254a3", "#8c6d31", "#843c39", "#7b4173", "#3182bd", "#e6550d", "#31a354", "#756bb1",
                  "#636363", "#6baed6", "#fd8d3c", "#74c476"]
_LINESTYLES = ["-", "--", ":", "-."]
MARKERS = ["o", "s", "^", "v", "P", "X", "<", ">"]


def styles(method_ids) -> dict[str, dict]:
    """``{id: {"colour", "linestyle", "marker"}}``: colour by family; variants of one family differ by
    line style and marker, in :func:`method_order`."""
    ids = sorted(set(method_ids), key=method_order)
    unknown = sorted({family(m) for m in ids} - set(FAMILY_COLOURS))
    colours = dict(FAMILY_COLOURS)
    colours.update({f: _SPARE_COLOURS[k % len(_SPARE_COLOURS)] for k, f in enumerate(unknown)})
    seen: dict[str, int] = {}
    out = {}
    for m in ids:
        k = seen.get(family(m), 0)
        seen[family(m)] = k + 1
        out[m] = {"colour": colours[family(m)], "linestyle": _LINESTYLES[k % len(_LINESTYLES)],
                  "marker": MARKERS[k % len(MARKERS)]}
    return out



def task_order(task: str) -> tuple:
    """Natural order: ``passkey-L512`` before ``passkey-L1024`` (runs of digits compare as numbers)."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", str(task)))
