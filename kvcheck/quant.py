"""Asymmetric group quantisation with bit packing: pure tensor functions shared by quantised methods.

A tensor is cut into groups of ``group_size`` along one axis; each group stores ``bits``-bit codes
and a (scale, zero) pair in float16, rounded outward (zero down, scale up) so the stored step still
covers the group and the reconstruction error stays within half a step.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

SCALE_DTYPE = torch.float16
SLACK = 2.0 ** -20  # float32 rounding allowance, relative to the magnitudes involved


@dataclass
class QTensor:
    """Packed codes ``uint8 [..., last // (8 // bits)]`` plus per-group ``scale`` and ``zero``.

    ``axis`` is the grouped axis (of the unpacked tensor) and ``shape`` the unpacked shape. Groups are
    aligned to the end of ``axis``: the first group may be partial, covering only its last
    ``group_size - lead_pad`` entries (no codes are stored for the missing ones).
    """

    codes: torch.Tensor
    scale: torch.Tensor
    zero: torch.Tensor
    bits: int
    axis: int
    group_size: int
    shape: tuple
    lead_pad: int = 0

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.codes, self.scale, self.zero))

    def cat(self, other: "QTensor") -> "QTensor":
        """Append ``other`` along the token axis (axis 2 of ``[batch, heads, tokens, dim]``)."""
        if (self.bits, self.axis, self.group_size) != (other.bits, other.axis, other.group_size) or other.lead_pad:
            raise ValueError("cannot concatenate QTensors with different layouts (or a partial group after the first)")
        groups_dim = -1 if self.axis == 2 else 2  # tokens grouped → groups are the scales' last axis
        shape = list(self.shape)
        shape[2] += other.shape[2]
        return QTensor(torch.cat([self.codes, other.codes], dim=2), torch.cat([self.scale, other.scale], dim=groups_dim),
                       torch.cat([self.zero, other.zero], dim=groups_dim), self.bits, self.axis, self.group_size,
                       tuple(shape), self.lead_pad)

    def error_bound(self, x: torch.Tensor) -> torch.Tensor:
        """Half of the group's stored step, ``scale/2 + 2⁻²⁰·(|x| + |zero| + scale)`` per entry of ``x``
        (the tensor quantised; the second term is float32 rounding)."""
        scale, zero = per_entry(self.scale, self), per_entry(self.zero, self)
        return scale / 2 + SLACK * (x.abs() + zero.abs() + scale)


def pack(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """``uint8`` codes in ``[0, 2**bits)`` → packed along the last axis (``8 // bits`` per byte)."""
    if bits == 8:
        return codes
    per = 8 // bits
    c = codes.view(*codes.shape[:-1], codes.shape[-1] // per, per).to(torch.int32)
    shifts = torch.arange(per, device=codes.device, dtype=torch.int32) * bits
    return (c << shifts).sum(dim=-1).to(torch.uint8)


def unpack(packed: torch.Tensor, bits: int) -> torch.Tensor:
    if bits == 8:
        return packed
    per = 8 // bits
    shifts = torch.arange(per, device=packed.device, dtype=torch.uint8) * bits
    c = (packed[..., None] >> shifts) & ((1 << bits) - 1)
    return c.reshape(*packed.shape[:-1], packed.shape[-1] * per)


def _grouped(x: torch.Tensor, axis: int, group_size: int) -> torch.Tensor:
    """Move ``axis`` last and split it into ``[..., n_groups, group_size]``."""
    x = x.movedim(axis, -1)
    return x.reshape(*x.shape[:-1], x.shape[-1] // group_size, group_size)


def quantize(x: torch.Tensor, bits: int, axis: int, group_size: int,
             valid: torch.Tensor | None = None) -> QTensor:
    """Quantise ``x`` in groups of ``group_size`` along ``axis``, groups aligned to the axis' end.

    ``valid`` (broadcastable to ``x``, bool) excludes entries from the min/max (left padding), so a
    group's range depends only on real tokens.
    """
    axis = axis % x.ndim
    levels = (1 << bits) - 1
    pad = (-x.shape[axis]) % group_size
    xf = x.float()
    v = valid.expand_as(x) if valid is not None else None
    if pad:  # the oldest group is partial: pad it with excluded entries, dropped again below
        shape = list(x.shape)
        shape[axis] = pad
        xf = torch.cat([xf.new_zeros(shape), xf], dim=axis)
        v = torch.cat([torch.zeros(shape, dtype=torch.bool, device=x.device),
                       v if v is not None else torch.ones_like(x, dtype=torch.bool)], dim=axis)
    g = _grouped(xf, axis, group_size)
    if v is None:
        lo, hi = g.amin(dim=-1), g.amax(dim=-1)
    else:
        vg = _grouped(v, axis, group_size)
        lo = g.masked_fill(~vg, float("inf")).amin(dim=-1)
        hi = g.masked_fill(~vg, float("-inf")).amax(dim=-1)
        empty = ~vg.any(dim=-1)
        lo, hi = lo.masked_fill(empty, 0.0), hi.masked_fill(empty, 0.0)
    zero = lo.to(SCALE_DTYPE)
    zero = torch.where(zero.float() > lo, torch.nextafter(zero, torch.full_like(zero, float("-inf"))), zero)
    step = ((hi - zero.float()) / levels).clamp_min(1e-8)
    scale = step.to(SCALE_DTYPE)
    scale = torch.where(scale.float() < step, torch.nextafter(scale, torch.full_like(scale, float("inf"))), scale)
    codes = ((g - zero.float()[..., None]) / scale.float()[..., None]).round_().clamp_(0, levels).to(torch.uint8)
    codes = codes.reshape(*codes.shape[:-2], -1)[..., pad:].movedim(-1, axis).contiguous()
    return QTensor(pack(codes, bits), scale, zero, bits, axis, group_size, tuple(x.shape), pad)


@functools.lru_cache(maxsize=None)
def _byte_table(bits: int, device: torch.device) -> torch.Tensor:
    """``[256, 8 // bits]`` float32: the codes one packed byte holds, in :func:`unpack`'s order."""
    per = 8 // bits
    shifts = torch.arange(per, dtype=torch.int64) * bits
    return ((torch.arange(256, dtype=torch.int64)[:, None] >> shifts) & ((1 << bits) - 1)).float().to(device)


def unpack_float(packed: torch.Tensor, bits: int) -> torch.Tensor:
    """``unpack(packed, bits).float()`` in one table lookup per byte (the same values, exactly)."""
    if bits == 8:
        return packed.float()
    table = _byte_table(bits, packed.device)
    return table.index_select(0, packed.reshape(-1).long()).view(*packed.shape[:-1], -1)


def dequantize(q: QTensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """codes × scale + zero, in float32, per group (broadcast, never repeated per entry), then ``dtype``."""
    codes = unpack_float(q.codes, q.bits)  # [..., n, ...] along q.axis
    axis, n = q.axis, q.shape[q.axis]
    if q.lead_pad:  # the oldest group is partial: pad it in front, drop the pad again below
        shape = list(codes.shape)
        shape[axis] = q.lead_pad
        codes = torch.cat([codes.new_zeros(shape), codes], dim=axis)
    groups = codes.unflatten(axis, (-1, q.group_size))  # [..., n_groups, group_size, ...]
    scale = q.scale.float().movedim(-1, axis).unsqueeze(axis + 1)  # [..., n_groups, 1, ...]
    zero = q.zero.float().movedim(-1, axis).unsqueeze(axis + 1)
    x = (groups * scale).add_(zero).flatten(axis, axis + 1)
    return x.narrow(axis, q.lead_pad, n).to(dtype)


def step_size(q: QTensor) -> torch.Tensor:
    """The quantisation step of each group (``scale``), as float32: max error is half of it."""
    return q.scale.float()


def per_entry(t: torch.Tensor, q: QTensor) -> torch.Tensor:
    """A per-group tensor of ``q`` (scale or zero) spread to every entry, in the unpacked layout."""
    return t.float().repeat_interleave(q.group_size, dim=-1)[..., q.lead_pad:].movedim(-1, q.axis)


def cat(a, b):
    """Append packed block ``b`` after ``a`` (None: nothing yet) along the token axis: any codec's
    packed tensor (a :class:`kvcheck.layer_api.Packed`) appends itself."""
    return b if a is None else a.cat(b)
