"""The rotary position embedding (RoPE) a model applied to its queries and keys, for scoring rules that
need queries before RoPE or at positions not yet seen (Expected Attention).

A :class:`Rope` wraps the model family's own rotary module (``LlamaRotaryEmbedding`` and the like,
built from the attention module's config), so cos/sin come out exactly as the model computes them,
``attention_scaling`` included. Only the ``rotate_half`` convention over the whole head is
reproduced: ``x_rot = x·cos + rotate_half(x)·sin`` with ``cos, sin`` ``[…, head_dim]``.

Three kinds, told apart by :meth:`Rope.kind`:

- a model's rotation (``rotary`` set): :meth:`Rope.cos_sin` for any positions, :meth:`Rope.invert`
  undoes it (``x = (x_rot·cos − rotate_half(x_rot)·sin) / (cos² + sin²)``, the denominator being
  ``attention_scaling²``);
- :data:`NO_ROPE`: the tensors carry no rotation (a model without RoPE, or tensors handed to a cache
  layer directly, as the property scenarios do): cos 1, sin 0;
- unsupported (``unsupported`` says why: a partial rotary dimension, a rotary module needing more
  than positions, another rotation convention): using it raises :class:`KvcheckError`; rules that
  never read the rotation are unaffected.

:func:`rope_of` finds the rotation of an attention module; kvcheck's attention function and
``engine.replay`` hand it to every cache layer that scores at prefill (``EvictionLayer.rope``), which
passes it on in :class:`kvcheck.layer_api.ScoreInputs`. It lives among the methods because the rules
read it; the cache never imports it (the attention function and the engine do).
"""
from __future__ import annotations

import inspect
import sys
import weakref
from dataclasses import dataclass

import torch

from ..errors import KvcheckError


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """``[x1, x2] → [−x2, x1]`` over the last axis (halves): the rotation partner of each channel."""
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


@dataclass(frozen=True, eq=False)
class Rope:
    """A rotary position embedding: the model's rotary module, no rotation (both None/empty), or an
    unsupported one (``unsupported`` = the reason)."""

    rotary: torch.nn.Module | None = None  # forward(x, position_ids) → (cos, sin) ``[b, n, rot_dim]``
    unsupported: str = ""

    @property
    def kind(self) -> str:
        """``"model"``, ``"none"`` or ``"unsupported"``."""
        return "unsupported" if self.unsupported else ("model" if self.rotary is not None else "none")

    def cos_sin(self, positions: torch.Tensor, head_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
        """float32 ``cos, sin`` ``[b, n, head_dim]`` at ``positions`` ``[b, n]`` (any positions, seen or not)."""
        if self.unsupported:
            raise KvcheckError(f"this model's rotary embedding cannot be reproduced: {self.unsupported}.")
        b, n = positions.shape
        if self.rotary is None:
            ones = torch.ones(b, n, head_dim, dtype=torch.float32, device=positions.device)
            return ones, torch.zeros_like(ones)
        probe = torch.zeros((), dtype=torch.float32, device=positions.device)  # sets dtype and device only
        cos, sin = self.rotary(probe, positions.long())
        if cos.shape[-1] != head_dim:
            raise KvcheckError(f"the rotary embedding covers {cos.shape[-1]} of {head_dim} channels per head; "
                               "only RoPE over the whole head is reproduced.")
        return cos.float().expand(b, n, head_dim), sin.float().expand(b, n, head_dim)

    def apply(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """``x`` ``[b, h, n, d]`` rotated to ``positions`` ``[b, n]`` (float32), as the model rotates."""
        cos, sin = self.cos_sin(positions, x.shape[-1])
        x = x.float()
        return x * cos[:, None] + rotate_half(x) * sin[:, None]

    def invert(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """``x`` ``[b, h, n, d]`` as it was before the model rotated it to ``positions`` ``[b, n]`` (float32)."""
        cos, sin = self.cos_sin(positions, x.shape[-1])
        cos, sin, x = cos[:, None], sin[:, None], x.float()
        return (x * cos - rotate_half(x) * sin) / (cos * cos + sin * sin)


NO_ROPE = Rope()

_FOUND: "weakref.WeakKeyDictionary[object, Rope]" = weakref.WeakKeyDictionary()


def _declares_rope(config) -> bool:
    return any(getattr(config, name, None) is not None for name in ("rope_parameters", "rope_theta", "rope_scaling"))


def _family_rope(module) -> Rope:
    family = sys.modules.get(type(module).__module__)
    found = [obj for name, obj in vars(family).items() if name.endswith("RotaryEmbedding") and isinstance(obj, type)
             and issubclass(obj, torch.nn.Module) and obj.__module__ == family.__name__] if family else []
    where = f"{type(module).__module__}.{type(module).__name__}"
    if len(found) != 1:
        return Rope(unsupported=f"{where}: {len(found)} rotary embedding classes beside it, not one")
    if not callable(getattr(family, "rotate_half", None)):
        return Rope(unsupported=f"{where}: its family defines no rotate_half (another rotation convention)")
    cls = found[0]
    extra = [p for p in list(inspect.signature(cls.forward).parameters.values())[3:]
             if p.default is inspect.Parameter.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    if extra:
        return Rope(unsupported=f"{cls.__name__}.forward needs {', '.join(p.name for p in extra)} besides the "
                                "positions (per-layer rotations)")
    try:
        with torch.inference_mode(False):  # ordinary buffers, whatever mode the first caller runs in
            rotary = cls(config=module.config).eval()
    except Exception as exc:  # a constructor this reading does not know
        return Rope(unsupported=f"{cls.__name__}(config) failed: {type(exc).__name__}: {exc}")
    return Rope(rotary)  # its forward moves inv_freq to the positions' device


def rope_of(module) -> Rope:
    """The rotation the attention ``module`` applies to its queries and keys: its family's rotary
    module built from ``module.config`` (kept for the module's lifetime); :data:`NO_ROPE` for a module
    without a config or whose config declares no RoPE; an unsupported :class:`Rope` (see above)."""
    config = getattr(module, "config", None)
    if config is None or not _declares_rope(config):
        return NO_ROPE
    try:
        return _FOUND[module]
    except (KeyError, TypeError):
        pass
    rope = _family_rope(module)
    try:
        _FOUND[module] = rope
    except TypeError:  # not weak-referenceable: found again next time
        pass
    return rope
