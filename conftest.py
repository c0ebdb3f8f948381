"""The compression methods kvcheck gates by default: every shipped method at two settings.

Add your own with one decorated factory; every suite then runs on it::

    @kvcheck.method(params=[0.5], ids=lambda r: f"r{r}")
    def my_method(ratio):
        return MyPress(compression_ratio=ratio)
"""
import kvcheck
from kvcheck.methods import KIVI, Full, SnapKV, StreamingLLM


@kvcheck.method()
def full():
    return Full()


@kvcheck.method(params=[0.5, 0.75])
def streaming_llm(ratio):
    return StreamingLLM(compression_ratio=ratio, sinks=4)


@kvcheck.method(params=[0.5, 0.75])
def snapkv(ratio):
    # a 16-token observation window covers the question at the end of the task prompts
    return SnapKV(compression_ratio=ratio, window=16, kernel=5, pooling="avg")


@kvcheck.method(params=[2, 4])
def kivi(bits):
    return KIVI(bits=bits, group_size=32, residual=32)
