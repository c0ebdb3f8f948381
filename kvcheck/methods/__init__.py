"""Compression methods, one per file. ``REGISTRY`` maps names to classes."""
from .base import (REGISTRY, DecodeEviction, EvictionMethod, Method, QuantMethod, ScoreInputs, StatefulEviction,
                   format_value, get_method_class, register)
from .full import Full
from .kivi import KIVI
from .snapkv import SnapKV
from .streaming_llm import StreamingLLM
from .h2o import H2O
from .pyramidkv import PyramidKV
from .tova import TOVA
from .knorm import KNorm
from .random_keep import RandomKeep
from .int_quant import IntQuant
from .fp8 import FP8

__all__ = ["REGISTRY", "DecodeEviction", "EvictionMethod", "Method", "QuantMethod", "ScoreInputs",
           "StatefulEviction", "format_value", "get_method_class", "register", "Full", "KIVI", "SnapKV", "StreamingLLM",
           "H2O", "PyramidKV", "TOVA", "KNorm", "RandomKeep", "IntQuant", "FP8"]
