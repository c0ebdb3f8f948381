"""Property coverage that is seen: each declared method draws its own examples, the run reports per
property how many examples exercised its rule, and a property that never exercised its rule fails."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CONFTEST = '''
from dataclasses import dataclass

import kvcheck
from kvcheck.methods import EvictionMethod, StreamingLLM, register


@register
@dataclass(frozen=True)
class KeepsAll(EvictionMethod):
    """An eviction method whose budget is every token: it never evicts, whatever its ratio."""
    name = "keeps_all"

    def budget(self, n_tokens, layer_idx, n_layers):
        return n_tokens

    def score(self, inputs):
        return inputs.positions.float()[:, None, :].expand(-1, inputs.keys.shape[1], -1)


@kvcheck.method(params=[0.5])
def keeps_all(r):
    return KeepsAll(compression_ratio=r)


@kvcheck.method(params=[0.5, 0.75])
def streaming_llm(r):
    return StreamingLLM(compression_ratio=r, sinks=4)
'''

DRAWS = '''
from hypothesis import given, strategies as st

from kvcheck.strategies import profile_share as share


@share(1.0)
@given(x=st.integers(0, 10 ** 9))
def test_draws(kv_method, x):
    print("DRAW", kv_method.id, x)
'''


def _project(pytester):
    pytester.makeconftest(CONFTEST)
    shutil.copytree(ROOT / "suites", pytester.path / "suites", ignore=shutil.ignore_patterns("conftest.py"))
    shutil.copy(ROOT / "suites" / "conftest.py", pytester.path / "suites" / "conftest.py")
    return pytester


def test_a_property_that_never_exercised_its_rule_fails_saying_so(pytester, monkeypatch):
    monkeypatch.setenv("CI", "1")  # the ci profile: derandomized
    _project(pytester)
    r = pytester.runpytest_subprocess("suites/test_properties.py", "-p", "no:cacheprovider", "-k", "kept_slots")
    out = r.stdout.str()
    r.assert_outcomes(failed=1, passed=3)  # full and streaming_llm at r0.5 and r0.75 exercise it
    assert "keeps_all(compression_ratio=0.5): the property never exercised its rule: 'a prompt token evicted'" in out
    # the counts are reported per property and rule, passing or not
    m = re.search(r"test_kept_slots_follow_the_budget: a prompt token evicted: (\d+) of (\d+) examples", out)
    assert m and 0 < int(m.group(1)) < int(m.group(2)), out


def test_each_method_draws_its_own_examples(pytester, monkeypatch):
    monkeypatch.setenv("CI", "1")
    _project(pytester)
    pytester.makepyfile(test_draws=DRAWS)
    r = pytester.runpytest_subprocess("test_draws.py", "-p", "no:cacheprovider", "-s")
    r.assert_outcomes(passed=3)
    draws: dict[str, list[str]] = {}
    for line in r.stdout.lines:
        if line.startswith("DRAW"):
            _, method, x = line.split()
            draws.setdefault(method, []).append(x)
    assert len(draws) == 3, r.stdout.str()
    assert len({tuple(v) for v in draws.values()}) == 3, f"methods drew the same examples: {draws}"
    again = pytester.runpytest_subprocess("test_draws.py", "-p", "no:cacheprovider", "-s")
    assert sorted(l for l in again.stdout.lines if l.startswith("DRAW")) == \
        sorted(l for l in r.stdout.lines if l.startswith("DRAW")), "the ci profile's draws are not reproducible"
