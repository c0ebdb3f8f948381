"""The negative-sample gate (``--kvcheck-negatives``): pure functions, then the plugin end to end with a
model-free accuracy gate whose per-sample scores are planted."""
from __future__ import annotations

import json

from kvcheck import negatives as neg

IDS = [f"passkey-L512-s0-{i:03d}" for i in range(4)] + ["kv_retrieval-L512-s0-000", "kv_retrieval-L512-s0-001"]


def test_dataset_of_sample_ids():
    assert neg.dataset_of("passkey-L512-s0-003") == "passkey-L512"
    assert neg.dataset_of("variable_tracking-L1024-s7-010") == "variable_tracking-L1024"
    assert neg.dataset_of("q17") == "samples"


def test_negatives_follow_the_study_rule_per_dataset():
    full = {i: 1.0 for i in IDS} | {"kv_retrieval-L512-s0-001": 0.0}
    a = {i: 1.0 for i in IDS} | {IDS[0]: 0.0, IDS[1]: 0.0}
    b = {i: 1.0 for i in IDS} | {IDS[0]: 0.95, IDS[2]: 0.0}
    d = neg.negatives({"full": full, "a": a, "b": b}, threshold=0.1, rule="seed")
    assert set(d) == {"passkey-L512", "kv_retrieval-L512"}
    assert d["passkey-L512"]["candidates"] == IDS[:4]
    # IDS[0]: b keeps 0.95 > 0.9 × 1, so not every method fails it; IDS[1] and IDS[2]: one method still right
    assert d["passkey-L512"]["negative_ids"] == []
    b[IDS[0]] = 0.9
    d = neg.negatives({"full": full, "a": a, "b": b}, threshold=0.1, rule="seed")
    assert d["passkey-L512"]["negative_ids"] == [IDS[0]]
    # kv_retrieval: mean 0.5, only the sample full got right is a candidate
    assert d["kv_retrieval-L512"]["candidates"] == ["kv_retrieval-L512-s0-000"]


def test_judge_reports_new_negatives_with_scores():
    scores = {"full": {i: 1.0 for i in IDS}, "a": {i: 1.0 for i in IDS} | {IDS[1]: 0.0},
              "b": {i: 1.0 for i in IDS} | {IDS[1]: 0.0}}
    now = neg.negatives(scores, 0.1, "seed")
    stored = neg.document({"methods": ["a", "b", "full"], "threshold": 0.1, "rule": "seed"},
                          neg.negatives({m: {i: 1.0 for i in IDS} for m in scores}, 0.1, "seed"), {})
    v = neg.judge(stored, ["a", "b", "full"], now, 0.1, "seed", scores)
    assert v.status == "regressed" and v.added == [IDS[1]]
    assert "grew from 0 to 1" in v.message and f"{IDS[1]}: full 1; a 0, b 0" in v.message
    assert neg.judge(neg.document(stored["key"], now, {}), ["a", "b", "full"], now, 0.1, "seed", scores).status == "ok"
    back = neg.judge(neg.document(stored["key"], now, {}), ["a", "b", "full"], stored["datasets"], 0.1, "seed", scores)
    assert back.status == "improved" and back.removed == [IDS[1]]
    other = neg.judge(stored, ["a", "full"], now, 0.1, "seed", scores)
    assert other.status == "skipped" and "delete the file" in other.message


CONFTEST = '''
import kvcheck
from kvcheck.methods import Full, StreamingLLM


@kvcheck.method()
def full():
    return Full()


@kvcheck.method(params=[0.5, 0.75])
def streaming_llm(r):
    return StreamingLLM(compression_ratio=r, sinks=4)
'''

GATE_TEST = '''
import os
from kvcheck import baseline as bl
from kvcheck.judge import Measured

IDS = [f"passkey-L512-s0-{i:03d}" for i in range(4)]


def test_accuracy(kv_method, kv_gate):
    """Planted per-sample scores: full gets every sample; each compressed method misses sample 000
    (a negative) and, with KVCHECK_PLANT, sample 001 too."""
    wrong = set() if kv_method.name == "full" else {IDS[0]} | ({IDS[1]} if os.environ.get("KVCHECK_PLANT") else set())
    samples = {i: {"score": 0.0 if i in wrong else 1.0, "correct": i not in wrong, "expected": "1", "got": "1"}
               for i in IDS}
    kv_gate.check("accuracy", kv_method,
          Measured(metrics={"acc": bl.metric(1 - len(wrong) / 4, 1.0, "higher")}, samples=samples,
                   sample_allowance=4))
'''


def _run(pytester, *args, plant=""):
    pytester._monkeypatch.setenv("KVCHECK_PLANT", plant)
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:randomly", "--kvcheck-tier", "smoke",
                                         "--kvcheck-negatives", *args)


def test_negative_sample_gate_end_to_end(pytester):
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_acc=GATE_TEST)
    stored = pytester.path / "baselines/smollm2-135m-instruct/smoke-float32/negatives/accuracy.json"

    r = _run(pytester, "--kvcheck-update=new")
    assert r.ret == 0, r.stdout.str()
    data = json.loads(stored.read_text())
    assert data["datasets"]["passkey-L512"]["negative_ids"] == ["passkey-L512-s0-000"]
    assert data["key"]["methods"] == ["full", "streaming_llm-r0.5-s4", "streaming_llm-r0.75-s4"]

    r = _run(pytester)
    assert r.ret == 0 and "negative samples unchanged (1)" in r.stdout.str()

    before = stored.read_text()
    r = _run(pytester, plant="1")
    out = r.stdout.str()
    assert r.ret == 1, out
    r.assert_outcomes(passed=3)  # each method is within its own allowance: only the set-level gate catches it
    assert "negative samples grew from 1 to 2" in out and "passkey-L512-s0-001: full 1;" in out
    assert "negative_samples" in out and "REGRESSED" in out
    assert "accept with: pytest test_acc.py --kvcheck-negatives --kvcheck-update=all" in out  # the user's own file
    assert stored.read_text() == before  # nothing written without an update

    r = _run(pytester, "-k", "full or r0.5", plant="1")
    assert r.ret == 0 and "negative-sample gate skipped" in r.stdout.str()

    r = _run(pytester, "--kvcheck-update=all", plant="1")
    assert r.ret == 0, r.stdout.str()
    assert json.loads(stored.read_text())["metrics"]["negative_count"]["value"] == 2
