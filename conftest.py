"""The compression methods kvcheck gates by default: every shipped method at two settings, one pre-merge.

Add your own with one decorated factory; every suite then runs on it::

    @kvcheck.method(params=[0.5], ids=lambda r: f"r{r}")
    def my_method(ratio):
        return MyPress(compression_ratio=ratio)
"""
import kvcheck
from kvcheck.methods import (FP8, H2O, KIVI, MXFP8, NVFP4, TOVA, Decoding, DecodingRatio, ExpectedAttention,
                             FP4MXBlock16, FP8PerTokenHead, Full, Int4PerTokenHead, Int8PerTokenHead, IntQuant, KeyDiff,
                             KNorm, NVFP4FourOverSix, PyramidKV, RandomKeep, SnapKV, StreamingLLM, Threshold,
                             TurboQuant, VllmFP8)

RATIOS = [0.5, 0.75]
# The pre-merge gate (``pytest suites/``) runs every method at one setting: r0.5 for eviction (where
# every eviction method still gets answers right, so its rows can move both ways), 2-bit KIVI, int4,
# fp8 without a residual (the settings where quantisation shows). The nightly selection
# (``--kvcheck-nightly``) adds the second setting of each.
NIGHTLY = [0.75]


@kvcheck.method()
def full():
    return Full()


@kvcheck.method(params=RATIOS, nightly=NIGHTLY)
def streaming_llm(ratio):
    return StreamingLLM(compression_ratio=ratio, sinks=4)


# a 16-token observation window covers the question at the end of the task prompts
@kvcheck.method(params=RATIOS, nightly=NIGHTLY)
def snapkv(ratio):
    return SnapKV(compression_ratio=ratio, window=16, kernel=5, pooling="avg")


@kvcheck.method(params=RATIOS, nightly=NIGHTLY)
def pyramidkv(ratio):
    return PyramidKV(compression_ratio=ratio, window=16, kernel=5, pooling="avg")


@kvcheck.method(params=RATIOS, nightly=NIGHTLY)
def h2o(ratio):
    return H2O(compression_ratio=ratio, recent=32)


@kvcheck.method(params=RATIOS, nightly=NIGHTLY)
def tova(ratio):
    return TOVA(compression_ratio=ratio)


@kvcheck.method(params=RATIOS, nightly=NIGHTLY)
def knorm(ratio):
    return KNorm(compression_ratio=ratio)


@kvcheck.method(params=RATIOS, nightly=NIGHTLY)
def random(ratio):
    return RandomKeep(compression_ratio=ratio, seed=0)


# group sizes chosen so codes + fp16 scales + residual stay under 0.20 (2-bit) / 0.30 (4-bit) of fp16
@kvcheck.method(params=[(2, 64), (4, 128)], ids=lambda p: f"b{p[0]}", nightly=[(4, 128)])
def kivi(bits_group):
    bits, group = bits_group
    return KIVI(bits=bits, group_size=group, residual=32)


@kvcheck.method(params=[8, 4], nightly=[8])
def int_quant(bits):
    return IntQuant(bits=bits, group_size=32)


@kvcheck.method(params=[0, 64], nightly=[64])
def fp8(residual):
    return FP8(residual=residual)



# The serving engines' own KV-cache formats, as the engines run them (every token quantised, no
# residual), each named as its engine flag names it (`kvcheck methods` lists the flag). One family:
# the pre-merge gate runs int8_per_token_head, the nightly selection every format.
ENGINE_FORMATS = {
    "int8_per_token_head": Int8PerTokenHead(),
    "nvfp4": NVFP4(), "nvfp4_4over6": NVFP4FourOverSix(), "int4_per_token_head": Int4PerTokenHead(),
    "fp8_per_token_head": FP8PerTokenHead(),
    "vllm_fp8": VllmFP8(),  # scales 1.0: a checkpoint without KV scales
    "mxfp8": MXFP8(), "fp4_mx_block16": FP4MXBlock16(),
    **{f"turboquant_{p}": TurboQuant(preset=p) for p in ("k3v4_nc", "k8v4", "4bit_nc", "3bit_nc")},
}


@kvcheck.method(params=list(ENGINE_FORMATS), ids=lambda name: name, nightly=list(ENGINE_FORMATS)[1:])
def engine_format(name):
    return ENGINE_FORMATS[name]


# kvpress's newer presses: scoring at prefill (Expected Attention, KeyDiff and its block variant),
# threshold eviction whose kept count varies by sample, head and layer (DMSPress), and compression while
# generating down to a target size (DecodingPress) or ratio. One family: the pre-merge gate runs
# KeyDiff at r0.5 (its rows live: 0.75 / 1 / 1 on the ci tasks), the nightly selection every setting. The decoding targets sit below the
# drift prompts' length + 64 generated tokens, so they act where outputs grow; SmolLM2-135M's key norms
# are about 19 outside layer 0, so thresholds of -20 / -18 on -|k| evict a share that varies per head.
PRESSES_2026 = {
    "keydiff-r0.5": KeyDiff(compression_ratio=0.5), "keydiff-r0.75": KeyDiff(compression_ratio=0.75),
    "expected_attention-r0.5": ExpectedAttention(compression_ratio=0.5),
    "expected_attention-r0.75": ExpectedAttention(compression_ratio=0.75),
    "keydiff-block128-r0.5": KeyDiff(compression_ratio=0.5, block=128),
    "threshold-20": Threshold(-20.0, window=64, decoding=True),
    "threshold-18": Threshold(-18.0, window=64, decoding=True),
    "decoding-t32": Decoding(target=32, interval=8), "decoding-t48": Decoding(target=48, interval=8),
    "decoding_ratio-r0.5": DecodingRatio(0.5, interval=8), "decoding_ratio-r0.75": DecodingRatio(0.75, interval=8),
}


@kvcheck.method(params=list(PRESSES_2026), ids=lambda name: name, nightly=list(PRESSES_2026)[1:])
def presses_2026(name):
    return PRESSES_2026[name]
