"""Methods as the report reads them (family, eviction ratio, nominal bits), their order, and one
plotting style per method that every figure shares. A method is a :class:`MethodRef` from a row's
``method_name``/``params`` when the input has them, else its id string, read by :mod:`.legacy`."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Mapping, Union

from . import legacy

REFERENCE = "full"


@dataclass(frozen=True)
class MethodRef:
    """A method as a report row records it: its id, its name and its parameters (field → value)."""

    id: str
    name: str
    params: Mapping = field(default_factory=dict)

    @classmethod
    def from_row(cls, row: Mapping) -> "MethodRef | None":
        """The structured method of a row or baseline key that carries ``method_name``/``params``."""
        name, params = row.get("method_name"), row.get("params")
        method_id = row.get("method_id", row.get("method"))
        if isinstance(name, str) and isinstance(params, dict) and isinstance(method_id, str):
            return cls(method_id, name, dict(params))
        return None


Method = Union[str, MethodRef]


def _value(v) -> str:
    return "none" if v is None else repr(v) if isinstance(v, float) else str(v)


def _id(m: Method) -> str:
    return m.id if isinstance(m, MethodRef) else m


def family(m: Method) -> str:
    """The method's name (``snapkv-r0.5-w16`` → ``snapkv``)."""
    return m.name if isinstance(m, MethodRef) else legacy.name_of(m)


def ratio(m: Method) -> float | None:
    """The eviction compression ratio (0.5), or None for other methods."""
    if isinstance(m, MethodRef):
        r = m.params.get("compression_ratio")
        return float(r) if isinstance(r, (int, float)) and not isinstance(r, bool) else None
    return legacy.ratio_of(m)


def config_key(m: Method) -> str:
    """The method without its ratio: the methods that make one line of the accuracy plot. From a
    structured row it is written in the method grammar (``snapkv:window=16,kernel=5,pooling=avg``)."""
    if isinstance(m, MethodRef):
        rest = [f"{k}={_value(v)}" for k, v in m.params.items() if k != "compression_ratio"]
        return m.name + (":" + ",".join(rest) if rest else "")
    return legacy.config_of(m)


def nominal_kv_ratio(m: Method) -> float | None:
    """bits / 16 from the method's bits (or an ``fp<bits>`` name); None when it states no bits."""
    if isinstance(m, MethodRef):
        bits = m.params.get("bits", m.params.get("nbits"))
        if not (isinstance(bits, int) and not isinstance(bits, bool)):
            bits = legacy.name_bits(m.name)
    else:
        bits = legacy.bits_of(m)
    return None if bits is None else bits / 16


def method_kind(m: Method) -> str:
    if _id(m) == REFERENCE:
        return "full"
    return "eviction" if ratio(m) is not None else "other"


def method_order(m: Method) -> tuple:
    """Full first, then eviction methods by name and ratio, then the rest by name."""
    kind = {"full": 0, "eviction": 1, "other": 2}[method_kind(m)]
    return (kind, family(m), config_key(m), ratio(m) or 0.0, _id(m))


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


def styles(method_ids, refs: Mapping[str, MethodRef] | None = None) -> dict[str, dict]:
    """``{id: {"colour", "linestyle", "marker"}}``: colour by family; variants of one family differ by
    line style and marker, in :func:`method_order`. ``refs`` gives the structured method of an id."""
    refs = refs or {}
    ref = lambda m: refs.get(m, m)  # noqa: E731
    ids = sorted(set(method_ids), key=lambda m: method_order(ref(m)))
    unknown = sorted({family(ref(m)) for m in ids} - set(FAMILY_COLOURS))
    colours = dict(FAMILY_COLOURS)
    colours.update({f: _SPARE_COLOURS[k % len(_SPARE_COLOURS)] for k, f in enumerate(unknown)})
    seen: dict[str, int] = {}
    out = {}
    for m in ids:
        fam = family(ref(m))
        k = seen.get(fam, 0)
        seen[fam] = k + 1
        out[m] = {"colour": colours[fam], "linestyle": _LINESTYLES[k % len(_LINESTYLES)],
                  "marker": MARKERS[k % len(MARKERS)]}
    return out


def task_order(task: str) -> tuple:
    """Natural order: ``passkey-L512`` before ``passkey-L1024`` (runs of digits compare as numbers)."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", str(task)))
