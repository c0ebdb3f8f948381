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
from .vllm_fp8 import VllmFP8
from .int8_per_token_head import Int8PerTokenHead
from .fp8_per_token_head import FP8PerTokenHead
from .mxfp8 import MXFP8
from .fp4_mx_block16 import FP4MXBlock16
from .int4_per_token_head import Int4PerTokenHead
from .nvfp4 import NVFP4
from .nvfp4_4over6 import NVFP4FourOverSix
from .turboquant import TurboQuant
from .expected_attention import ExpectedAttention
from .keydiff import KeyDiff
from .threshold import Threshold
from .decoding import Decoding
from .decoding_ratio import DecodingRatio

__all__ = ["REGISTRY", "DecodeEviction", "EvictionMethod", "Method", "QuantMethod", "ScoreInputs",
           "StatefulEviction", "format_value", "get_method_class", "register", "Full", "KIVI", "SnapKV", "StreamingLLM",
           "H2O", "PyramidKV", "TOVA", "KNorm", "RandomKeep", "IntQuant", "FP8",
           "VllmFP8", "Int8PerTokenHead", "FP8PerTokenHead", "MXFP8", "FP4MXBlock16", "Int4PerTokenHead", "NVFP4",
           "NVFP4FourOverSix", "TurboQuant", "ExpectedAttention", "KeyDiff", "Threshold", "Decoding", "DecodingRatio"]
