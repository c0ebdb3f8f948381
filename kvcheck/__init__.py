"""kvcheck: regression gates for KV-cache compression."""
from .errors import KvcheckError
from .methods import REGISTRY, EvictionMethod, Full, Method, QuantMethod
from .model import load_model
from .engine import generate, teacher_forced
from .cache import CompressedCache

__version__ = "0.1.0"


def method(*args, **kwargs):
    """``@kvcheck.method(params=[...], ids=...)``: declare a compression method as a pytest fixture."""
    from .declare import method as _method

    return _method(*args, **kwargs)


__all__ = ["KvcheckError", "REGISTRY", "EvictionMethod", "Full", "Method", "QuantMethod", "load_model",
           "generate", "teacher_forced", "CompressedCache", "method"]
