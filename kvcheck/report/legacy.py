"""Method structure read back from method ids, for report files written before rows carried
``method_name`` and ``params`` (and for hand-made ids): the only place the report parses an id."""
from __future__ import annotations

import re

_RATIO_PART = re.compile(r"^r(\d+(?:\.\d+)?)$")
_BITS_PART = re.compile(r"^b(\d+)$")
_FP_NAME = re.compile(r"^fp(\d+)$")


def name_of(method_id: str) -> str:
    """The method's name: the id up to its first ``-`` (``snapkv-r0.5-w16`` → ``snapkv``)."""
    return method_id.split("-", 1)[0]


def ratio_of(method_id: str) -> float | None:
    """The eviction compression ratio in the id (``-r0.5`` → 0.5), or None."""
    for part in method_id.split("-")[1:]:
        m = _RATIO_PART.match(part)
        if m:
            return float(m.group(1))
    return None


def bits_of(method_id: str) -> int | None:
    """Bits from a ``-b<bits>`` part or an ``fp<bits>`` name, or None."""
    fam = _FP_NAME.match(name_of(method_id))
    if fam:
        return int(fam.group(1))
    for part in method_id.split("-")[1:]:
        m = _BITS_PART.match(part)
        if m:
            return int(m.group(1))
    return None


def config_of(method_id: str) -> str:
    """The id without its ratio part."""
    parts = method_id.split("-")
    return "-".join([parts[0]] + [p for p in parts[1:] if not _RATIO_PART.match(p)])


def name_bits(name: str) -> int | None:
    """Bits a method's name states (``fp8`` → 8), or None."""
    m = _FP_NAME.match(name)
    return int(m.group(1)) if m else None
