"""transformers' ``QuantizedCache`` backends as a kvcheck method.

Each layer of the kvcheck cache holds one of transformers' own quantised cache layers
(``QuantoQuantizedLayer``, ``HQQQuantizedLayer``, ``Fp8QuantizedLayer``) and hands it every update, so
storage, flushing and dequantisation are transformers' code, unchanged::

    # conftest.py
    import kvcheck
    from kvcheck.adapters.hf_quantized import HFQuantized

    @kvcheck.method(params=[2, 4], ids=lambda b: f"b{b}")
    def hf_quanto(bits):
        return HFQuantized(backend="quanto", nbits=bits, q_group_size=64, residual_length=128)

Backends and what they need:

- ``quanto``: ``pip install optimum-quanto`` (≥ 0.2.5; CPU unpacking compiles a small C++ extension
  on first use); nbits 2 or 4, axes 0 or -1.
- ``hqq``: ``pip install hqq``; nbits 1, 2, 3, 4 or 8, axes 0 or 1.
- ``fp8``: no extra package (transformers ≥ 5.24; absent from 5.2); one per-tensor scale, frozen after
  the prompt; takes none of the group-wise options.

The rule is transformers': the whole prompt is quantised at prefill (attention at prefill sees the
exact keys, as for every kvcheck method); while generating, new tokens gather in a full-precision
residual which, once ``residual_length`` tokens long, is re-quantised together with everything held
(quanto, hqq); fp8 appends each token quantised with the prompt's scale. The kvcheck layer only adds
what the attention mask needs (each slot's true position and whether it is a real token). Left
padding is quantised along with the real tokens, as transformers does (its groups do not know about
padding), so batched runs of the group-wise backends can differ slightly from batch-1 runs when a
group spans tokens (``axis`` = -1 / 1). ``kv_bytes()`` counts the backend's packed codes, scales and
zero-points and the residual, read off the objects transformers holds.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..cache import SharedSlots
from ..errors import KvcheckError
from ..methods.base import Method

LAYER_CLASSES = {"quanto": "QuantoQuantizedLayer", "hqq": "HQQQuantizedLayer", "fp8": "Fp8QuantizedLayer"}
PACKAGES = {"quanto": "pip install optimum-quanto", "hqq": "pip install hqq",
            "fp8": "pip install 'transformers>=5.24'"}
GROUP_WISE = ("nbits", "q_group_size", "residual_length", "axis_key", "axis_value")


def backend_available(backend: str) -> str | None:
    """None when ``backend`` can be built here, else why not (with what to install)."""
    import transformers.cache_utils as cu

    if backend not in LAYER_CLASSES:
        return f"unknown backend {backend!r}; choose one of {', '.join(LAYER_CLASSES)}"
    cls = getattr(cu, LAYER_CLASSES[backend], None)
    if cls is None:
        return (f"transformers {_version()} has no {LAYER_CLASSES[backend]} (backend {backend!r}); "
                f"{PACKAGES[backend]}")
    if backend == "quanto" and not cu.is_optimum_quanto_available():
        return f"backend 'quanto' needs optimum-quanto: {PACKAGES['quanto']}"
    if backend == "hqq" and not cu.is_hqq_available():
        return f"backend 'hqq' needs hqq: {PACKAGES['hqq']}"
    return None


def _version() -> str:
    import transformers

    return transformers.__version__


def tensor_bytes(obj, float_bytes: int | None = None) -> int:
    """Bytes held by a backend's quantised object: tensors (quanto's tensor subclasses opened up into
    their inner tensors), and tuples, lists and dicts of them (hqq's codes + metadata, fp8's codes +
    scale). ``float_bytes`` counts floating tensors wider than that at that many bytes each."""
    if obj is None:
        return 0
    if isinstance(obj, (tuple, list)):
        return sum(tensor_bytes(x, float_bytes) for x in obj)
    if isinstance(obj, dict):
        return sum(tensor_bytes(x, float_bytes) for x in obj.values())
    if not isinstance(obj, torch.Tensor):
        return 0
    if hasattr(obj, "__tensor_flatten__") and type(obj) is not torch.Tensor:
        names, _ = obj.__tensor_flatten__()
        return sum(tensor_bytes(getattr(obj, n), float_bytes) for n in names)
    size = obj.element_size()
    if float_bytes and obj.is_floating_point():
        size = min(size, float_bytes)
    return obj.numel() * size


class HFQuantizedLayer(SharedSlots):
    """Delegates storage to transformers' quantised layer ``inner``; keeps ``positions`` / ``valid``
    ``[b, slots]`` (the same for every head) for the attention mask, in the order ``inner`` returns
    its states (quantised part, residual, new tokens: positional order)."""

    def __init__(self, method, layer_idx: int, n_layers: int):
        super().__init__(method, layer_idx, n_layers)
        self.inner = method.make_inner()

    def update(self, key_states, value_states, positions=None, valid=None, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        self.append_slots(positions, valid, key_states.shape[1])
        return self.inner.update(key_states, value_states)

    def get_seq_length(self) -> int:
        return 0 if self.valid is None else self.valid.shape[1]

    # after_forward: SlotLayer's (mark prefilled); transformers' layer quantises inside update

    def nbytes(self, float_bytes: int | None = None) -> int:
        inner = self.inner
        return (tensor_bytes(inner._quantized_keys, float_bytes) + tensor_bytes(inner._quantized_values, float_bytes)
                + tensor_bytes(inner.keys, float_bytes) + tensor_bytes(inner.values, float_bytes))


@dataclass(frozen=True)
class HFQuantized(Method):
    """transformers' quantised KV cache (``backend`` quanto | hqq | fp8). The group-wise options are
    passed to transformers' layer as given; None leaves transformers' default (nbits 4, group 64,
    residual 128, axes 0); fp8 takes none of them."""

    name = "hf_quantized"

    backend: str = field(default="quanto", metadata={"short": "be"})
    nbits: int | None = field(default=None, metadata={"short": "b"})
    q_group_size: int | None = field(default=None, metadata={"short": "g"})
    residual_length: int | None = field(default=None, metadata={"short": "res"})
    axis_key: int | None = field(default=None, metadata={"short": "ak"})
    axis_value: int | None = field(default=None, metadata={"short": "av"})

    def __post_init__(self):
        why = backend_available(self.backend)
        if why:
            raise KvcheckError(f"hf_quantized: {why}.")
        if self.backend == "fp8":
            given = [k for k in GROUP_WISE if getattr(self, k) is not None]
            if given:
                raise KvcheckError(f"hf_quantized: the fp8 backend quantises per tensor and takes no {', '.join(given)}; "
                                   "leave them unset or use backend 'quanto' / 'hqq'.")
        self.make_inner()  # transformers validates the options (bits, axes) on construction

    def layer_kwargs(self) -> dict:
        return {k: getattr(self, k) for k in GROUP_WISE if getattr(self, k) is not None}

    def make_inner(self):
        import transformers.cache_utils as cu

        cls = getattr(cu, LAYER_CLASSES[self.backend])
        try:
            return cls(**self.layer_kwargs())
        except (ValueError, ImportError) as exc:
            raise KvcheckError(f"hf_quantized ({self.backend}): {exc}") from exc

    def make_layer(self, layer_idx: int, n_layers: int):
        return HFQuantizedLayer(self, layer_idx, n_layers)
