"""The property suites' oracles state the shipped methods' rules apart from the methods' code, so a
wrong flag or another budget split fails the properties instead of agreeing with itself."""
from __future__ import annotations

import itertools
import shutil
from pathlib import Path

import pytest

from kvcheck import oracles
from kvcheck.methods import PyramidKV, StreamingLLM

ROOT = Path(__file__).resolve().parents[1]


def test_pyramidkv_keeps_the_papers_split():
    for n, r, w, beta, layers in itertools.product([5, 17, 100, 513], [0.1, 0.5, 0.9], [4, 16], [2, 20], [1, 3, 30]):
        m = PyramidKV(compression_ratio=r, window=w, beta=beta)
        got = [m.budget(n, layer, layers) for layer in range(layers)]
        assert got == oracles.pyramid_budgets(n, r, w, beta, layers), (n, r, w, beta, layers)
        assert sum(got) == layers * (n - int(n * r))  # the same total as a uniform split
        assert got[1:] == sorted(got[1:], reverse=True)  # most at the bottom (layer 1 may hold a remainder token)


def test_documented_rules_do_not_ask_the_method():
    m = StreamingLLM(compression_ratio=0.5, sinks=4)
    assert oracles.evicts_on_decode(m) and oracles.documented_budget(m, 101, 0, 3) == 51
    assert set(oracles.DOCUMENTED) == {"streaming_llm", "h2o", "tova", "snapkv", "knorm", "random", "pyramidkv",
                                       "expected_attention", "keydiff"}
    # kvpress's count where a method selects it, kvcheck's otherwise
    from kvcheck.methods import KeyDiff
    assert oracles.documented_budget(KeyDiff(compression_ratio=0.5), 1001, 0, 3) == 501
    assert oracles.documented_budget(KeyDiff(compression_ratio=0.5, count="kvpress"), 1001, 0, 3) == 500


PLANTED = '''
import dataclasses
import kvcheck
from kvcheck.methods import PyramidKV, StreamingLLM


class NoDecodeEviction(StreamingLLM):
    """streaming_llm whose flag says it does not evict while generating (its cache then grows)."""
    @property
    def capabilities(self):
        return dataclasses.replace(super().capabilities, evicts_on_decode=False)


class Reversed(PyramidKV):
    """pyramidkv with its per-layer split upside down: the same total, the wrong layers."""
    def budget(self, n_tokens, layer_idx, n_layers):
        return super().budget(n_tokens, n_layers - 1 - layer_idx, n_layers)


@kvcheck.method()
def streaming_llm():
    return NoDecodeEviction(compression_ratio=0.5, sinks=4)


@kvcheck.method()
def pyramidkv():
    return Reversed(compression_ratio=0.5, window=4, kernel=3, beta=20)


@kvcheck.method()
def snapkv():
    from kvcheck.methods import SnapKV
    return SnapKV(compression_ratio=0.5, window=4, kernel=3)
'''


def test_a_wrong_flag_and_another_split_fail_the_budget_property(pytester, monkeypatch):
    from kvcheck import declare

    monkeypatch.setattr(declare, "DECLARED", {})  # the inner conftest declares its own methods
    monkeypatch.setenv("CI", "1")  # the ci hypothesis profile, as CI runs it
    pytester.makeconftest(PLANTED)
    shutil.copytree(ROOT / "suites", pytester.path / "suites")
    r = pytester.runpytest_subprocess("suites/test_properties.py", "-k", "kept_slots", "-p", "no:cacheprovider",
                                      "-p", "no:randomly")
    out = r.stdout.str()
    assert r.parseoutcomes().get("failed") == 2, out
    assert "test_kept_slots_follow_the_budget[streaming_llm-r0.5-s4]" in out
    assert "test_kept_slots_follow_the_budget[pyramidkv-r0.5-w4-k3-pavg-beta20]" in out
    assert "kept_counts" in out
    assert "snapkv" not in "".join(line for line in out.splitlines() if line.startswith("FAILED"))
