"""Compression methods, one per file. ``REGISTRY`` maps names to classes."""
from .base import REGISTRY, EvictionMethod, Method, QuantMethod, ScoreInputs, get_method_class, register
from .full import Full
from .kivi import KIVI
from .snapkv import SnapKV
from .streaming_llm import StreamingLLM

__all__ = ["REGISTRY", "EvictionMethod", "Method", "QuantMethod", "ScoreInputs", "get_method_class",
           "register", "Full", "KIVI", "SnapKV", "StreamingLLM"]
