"""Per-sample analysis: flips, negative samples under both rules, task-type ratios, and ``kvcheck samples``
on hand-made folders, on ``kvcheck eval`` results and on the reference score folder."""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from kvcheck.cli import main
from kvcheck.errors import KvcheckError
from kvcheck.metrics.samples import (DatasetNegatives, flips, is_negative, negative_samples, scores_from_eval,
                                     task_type_ratios, task_types_from_eval)

REFERENCE = Path("/work/shared/reference/rethink-kv-per-sample")
BASE = "hf_Meta-Llama-3-8B-instruct_8192_b1"
SPARSE = ["streamingllm_Meta-Llama-3-8B-instruct_8192_b1_c2048_w32_k7_maxpool",
          "h2o_Meta-Llama-3-8B-instruct_8192_b1_c2048_w32_k7_maxpool"]


# --- flips ---------------------------------------------------------------------------------------

def test_flips_lost_gained_missing():
    base = {"a": True, "b": True, "c": False, "d": False, "e": True}
    meth = {"a": True, "b": False, "c": True, "d": False, "f": False}
    f = flips(base, meth)
    assert (f.lost, f.gained, f.missing) == (["b"], ["c"], ["e", "f"])


def test_flips_sort_numeric_ids_numerically():
    f = flips({10: True, 9: True, 2: True}, {10: False, 9: False, 2: False})
    assert f.lost == [2, 9, 10]


# --- candidates and negatives ----------------------------------------------------------------------

def test_candidates_include_ties_at_the_mean():
    base = {"lo": 0.25, "mid": 0.5, "hi": 0.75}  # mean exactly 0.5
    d = negative_samples(base, [{"lo": 0.0, "mid": 0.0, "hi": 0.0}])
    assert d.baseline_mean == 0.5
    assert d.candidates == ["hi", "mid"]
    assert d.negative_ids == ["hi", "mid"]  # below-mean "lo" also fails but is no candidate


def test_every_method_must_fail():
    base = {"x": 1.0, "y": 1.0}
    ok_on_x = {"x": 1.0, "y": 0.0}
    bad = {"x": 0.0, "y": 0.0}
    assert negative_samples(base, [bad]).negative_ids == ["x", "y"]
    assert negative_samples(base, [bad, ok_on_x]).negative_ids == ["y"]


@pytest.mark.parametrize("base, method, t, negative", [
    (1.0, 0.9, 0.1, True),          # exactly (1 - t) x base counts
    (1.0, 0.9000001, 0.1, False),
    (0.5, 0.25, 0.5, True),
    (0.5, 0.2500001, 0.5, False),
    (0.8, 0.8, 0.0, True),          # t = 0: any score not above the baseline
    (0.8, 0.8000001, 0.0, False),
    (0.8, 0.0, 0.99, True),
    (0.8, 0.01, 0.99, False),
])
def test_threshold_edges(base, method, t, negative):
    assert is_negative(base, [method], t) is negative
    assert is_negative(base, [method], t, "strict") is negative


def test_zero_baseline_seed_counts_it_strict_never():
    base = {"a": 0.0, "b": 0.0}  # mean 0: both are candidates
    zero = {"a": 0.0, "b": 0.0}
    seed = negative_samples(base, [zero], rule="seed")
    strict = negative_samples(base, [zero], rule="strict")
    assert seed.candidates == strict.candidates == ["a", "b"]
    assert seed.negative_ids == ["a", "b"]
    assert strict.negative_ids == []
    assert negative_samples(base, [{"a": 0.1, "b": 0.0}]).negative_ids == ["b"]


def test_zero_baseline_below_a_positive_mean_is_no_candidate():
    d = negative_samples({"z": 0.0, "p": 1.0}, [{"z": 0.0, "p": 1.0}], rule="seed")
    assert d.candidates == ["p"] and d.negative_ids == []


def test_missing_ids_are_reported_and_left_out_of_the_mean():
    base = {"1": 1.0, "2": 0.0, "3": 0.2}     # "3" only in the baseline: left out, mean = 0.5
    meth_a = {"1": 0.0, "2": 0.0, "4": 0.0}   # "4" only in one method
    meth_b = {"1": 0.0, "2": 0.0, "3": 0.0}
    d = negative_samples(base, [meth_a, meth_b])
    assert d.missing_ids == ["3", "4"]
    assert d.baseline_mean == 0.5
    assert d.candidates == ["1"] and d.negative_ids == ["1"]


def test_no_common_ids():
    d = negative_samples({"a": 1.0}, [{"b": 0.0}])
    assert d == DatasetNegatives([], [], ["a", "b"], None)


@pytest.mark.parametrize("t", [1.0, -0.01, 1.5, float("nan")])
def test_threshold_outside_range_is_an_error(t):
    with pytest.raises(KvcheckError, match=r"\[0, 1\)"):
        negative_samples({"a": 1.0}, [{"a": 0.0}], threshold=t)


def test_bad_rule_and_no_methods_are_errors():
    with pytest.raises(KvcheckError, match="seed, strict"):
        negative_samples({"a": 1.0}, [{"a": 0.0}], rule="loose")
    with pytest.raises(KvcheckError, match="at least one"):
        negative_samples({"a": 1.0}, [])


# --- task types -----------------------------------------------------------------------------------

def test_task_type_ratio_sums_over_datasets():
    per = {
        "qasper": DatasetNegatives(["1", "2", "3"], ["1"], [], 0.5),
        "hotpotqa": DatasetNegatives(["1"], ["1"], [], 0.5),
        "gov_report": DatasetNegatives([], [], [], None),
        "mystery": DatasetNegatives(["a", "b"], [], [], 0.3),
    }
    r = task_type_ratios(per)
    assert list(r) == ["QA", "Summarization", "Other"]
    assert r["QA"] == {"negative": 2, "candidates": 4, "ratio": 0.5}  # (1 + 1) / (3 + 1), not mean of ratios
    assert r["Summarization"]["ratio"] is None
    assert r["Other"] == {"negative": 0, "candidates": 2, "ratio": 0.0}


# --- kvcheck eval results ---------------------------------------------------------------------------

def eval_doc(task: str, records: dict) -> dict:
    return {"kind": "kvcheck-eval", "task": task, "records": {
        m: [{"id": i, "score": s, "task_type": "Synthetic"} for i, s in recs.items()] for m, recs in records.items()}}


def test_scores_from_eval_merges_documents_and_reads_types():
    docs = [eval_doc("passkey", {"full": {"p-0": 1.0}, "snapkv": {"p-0": 0.0}}),
            eval_doc("passkey", {"full": {"p-1": 0.0}}), eval_doc("qasper", {"full": {"q-0": 0.5}})]
    assert scores_from_eval(docs, "full") == {"passkey": {"p-0": 1.0, "p-1": 0.0}, "qasper": {"q-0": 0.5}}
    assert scores_from_eval(docs, "snapkv") == {"passkey": {"p-0": 0.0}}
    assert task_types_from_eval(docs) == {"passkey": "Synthetic", "qasper": "QA"}  # LongBench map wins


def test_scores_from_eval_rejects_duplicates_and_missing_scores():
    with pytest.raises(KvcheckError, match="twice"):
        scores_from_eval([eval_doc("passkey", {"full": {"p-0": 1.0}})] * 2, "full")
    with pytest.raises(KvcheckError, match="no score"):
        scores_from_eval([eval_doc("passkey", {"full": {"p-0": None}})], "full")


def test_cli_from_eval(tmp_path, capsys):
    a = tmp_path / "a.json"
    b = tmp_path / "b.json"
    a.write_text(json.dumps(eval_doc("passkey", {"full": {"0": 1.0, "1": 1.0, "2": 0.0},
                                                  "snapkv-r0.5": {"0": 0.0, "1": 1.0, "2": 0.0}})))
    b.write_text(json.dumps(eval_doc("open_ended", {"full": {"0": 1.0}})))
    out = tmp_path / "out.json"
    assert main(["samples", "--from-eval", str(a), str(b), "--baseline", "full",
                 "--methods", "snapkv-r0.5", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["datasets"]["passkey"]["negative_ids"] == ["0"]
    assert res["task_types"] == {"Synthetic": {"negative": 1, "candidates": 2, "ratio": 0.5}}
    assert "skipped open_ended" in capsys.readouterr().err


# --- kvcheck samples on score folders -----------------------------------------------------------------

def write_scores(folder: Path, config: str, dataset: str, scores: dict) -> None:
    rows = [{"id": i, "score": s} for i, s in scores.items()]
    (folder / f"{config}_{dataset}_eval.json").write_text(json.dumps(rows))


def test_cli_folder_rescales_0_100_and_skips_incomplete_datasets(tmp_path, capsys):
    write_scores(tmp_path, "base", "qasper", {0: 1.0, 1: 0.5, 2: 0.0})
    write_scores(tmp_path, "m", "qasper", {0: 90, 1: 50, 2: 0})  # 0–100 scale
    write_scores(tmp_path, "base", "trec", {0: 1.0})
    out = tmp_path / "out.json"
    assert main(["samples", str(tmp_path), "--baseline", "base", "--methods", "m", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert set(res["datasets"]) == {"qasper"}
    assert res["datasets"]["qasper"]["negative_ids"] == ["0"]  # 0.9 <= 0.9 x 1.0
    assert res["datasets"]["qasper"]["candidates"] == 2
    err = capsys.readouterr().err
    assert "skipped trec: nothing for m" in err and "divided by 100" in err


@pytest.mark.parametrize("setup, argv, message", [
    (None, ["--baseline", "base", "--methods", "m"], "is not a folder"),
    ("ok", ["--baseline", "nope", "--methods", "m"], "configs there"),
    ("ok", ["--baseline", "base", "--methods", "m", "--threshold", "1"], r"\[0, 1\)"),
    ("ok", ["--baseline", "base", "--methods", "base"], "other than the baseline"),
    ("broken", ["--baseline", "base", "--methods", "m"], "not valid JSON"),
    ("shape", ["--baseline", "base", "--methods", "m"], "JSON list"),
    ("dup", ["--baseline", "base", "--methods", "m"], "appears twice"),
])
def test_cli_bad_input_exits_2(tmp_path, capsys, setup, argv, message):
    folder = tmp_path / "scores"
    if setup:
        folder.mkdir()
        write_scores(folder, "base", "qasper", {0: 1.0})
        write_scores(folder, "m", "qasper", {0: 0.0})
        bad = folder / "m_qasper_eval.json"
        if setup == "broken":
            bad.write_text("[{\"id\": 0, ")
        elif setup == "shape":
            bad.write_text(json.dumps({"0": 0.0}))
        elif setup == "dup":
            bad.write_text(json.dumps([{"id": 0, "score": 0.0}, {"id": "0", "score": 0.0}]))
    assert main(["samples", str(folder), *argv]) == 2
    assert any(re.search(message, line) for line in capsys.readouterr().err.splitlines())


@pytest.mark.skipif(not REFERENCE.is_dir(), reason="reference score folder not present")
def test_cli_on_reference_folder(tmp_path):
    out = tmp_path / "out.json"
    assert main(["samples", str(REFERENCE), "--baseline", BASE, "--methods", ",".join(SPARSE),
                 "--threshold", "0.1", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert {"baseline", "methods", "threshold", "rule", "datasets", "task_types"} <= set(res)
    assert res["methods"] == SPARSE and res["threshold"] == 0.1 and res["rule"] == "seed"
    assert len(res["datasets"]) == 14
    for d in res["datasets"].values():
        assert {"candidates", "negative_ids"} <= set(d) and d["missing_ids"] == []
    for t in res["task_types"].values():
        assert set(t) == {"negative", "candidates", "ratio"}
    summ = res["task_types"]["Summarization"]
    assert summ["candidates"] == sum(res["datasets"][d]["candidates"] for d in ("gov_report", "qmsum", "multi_news"))

    # gov_report, computed independently: position-aligned lists, plain mean
    load = lambda c: json.loads((REFERENCE / f"{c}_gov_report_eval.json").read_text())  # noqa: E731
    base, others = load(BASE), [load(c) for c in SPARSE]
    mean = sum(e["score"] for e in base) / len(base)
    expected = [e["id"] for k, e in enumerate(base)
                if e["score"] >= mean and all(o[k]["score"] <= 0.9 * e["score"] for o in others)]
    assert res["datasets"]["gov_report"]["negative_ids"] == [str(i) for i in expected]
    assert len(expected) == 53
    assert math.isclose(res["datasets"]["gov_report"]["ratio"], 53 / res["datasets"]["gov_report"]["candidates"])
