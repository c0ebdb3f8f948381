"""The KV-cache compression methods kvcheck gates in this repository.

Every method declared here with ``@kvcheck.method`` runs through every kvcheck suite in this folder
(fidelity, accuracy, length drift, throughput, and the property suites) against the baselines in
``baselines/``. ``full``, the uncompressed cache, is the reference the suites compare with: keep it.

Written by ``kvcheck init``; this file is yours to edit (``kvcheck init --check`` checks only that it
still imports kvcheck's fixtures).
"""
import kvcheck
from kvcheck.methods import Full
from kvcheck.suites.fixtures import *  # noqa: F401,F403  (hypothesis profiles, tiny_lm, one_thread)


@kvcheck.method()
def full():
    return Full()


# Your method, declared at the settings you ship. An eviction method scores tokens (the cache keeps
# the best-scored ``1 - compression_ratio`` of them per KV head); a quantisation method subclasses
# kvcheck.methods.QuantMethod. One file per method in your own package is the usual layout.
#
# from dataclasses import dataclass
#
# from kvcheck.methods import EvictionMethod, register
#
#
# @register
# @dataclass(frozen=True)
# class MyPress(EvictionMethod):
#     name = "my_press"
#
#     def score(self, inputs):  # [batch, kv_heads, seq]: higher is kept
#         return -inputs.keys.norm(dim=-1)
#
#
# @kvcheck.method(params=[0.5], ids=lambda r: f"r{r}")
# def my_press(ratio):
#     return MyPress(compression_ratio=ratio)
