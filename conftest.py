"""The compression methods kvcheck gates by default: every shipped method at two settings, one pre-merge.

Add your own with one decorated factory; every suite then runs on it::

    @kvcheck.method(params=[0.5], ids=lambda r: f"r{r}")
    def my_method(ratio):
        return MyPress(compression_ratio=ratio)
"""
import kvcheck
from kvcheck.methods import (FP8, H2O, KIVI, Full, IntQuant, KNorm, PyramidKV, RandomKeep, SnapKV,
                             StreamingLLM, TOVA)

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
