"""Answer scorers on hand-made cases whose values are worked out by hand."""
from __future__ import annotations

import pytest

from kvcheck.errors import KvcheckError
from kvcheck.metrics import scoring as sc


def test_normalisation_is_longbench_s():
    assert sc.normalize_answer("The  Cat, sat!  on an OLD mat.") == "cat sat on old mat"
    assert sc.normalize_answer("theatre") == "theatre"  # articles only as whole words


def test_qa_f1_exact_values():
    # normalised "cat sat" vs "cat sat down": 2 common tokens, precision 2/2, recall 2/3 -> F1 0.8
    assert sc.qa_f1("The cat sat", "cat sat down") == pytest.approx(0.8)
    assert sc.qa_f1("Paris.", "paris") == 1.0
    assert sc.qa_f1("London", "Paris") == 0.0
    assert sc.qa_f1("", "Paris") == 0.0
    # repeated tokens count once per occurrence in both: "a a b" vs "a b b" share a, b -> 2/3 each way
    assert sc.qa_f1("x x y", "x y y") == pytest.approx(2 / 3)


def test_rouge_l():
    assert sc.rouge_l("the cat sat on the mat", "The cat sat on the mat.") == pytest.approx(1.0)
    # LCS "police the gunman" = 3 of 4 tokens each side -> P = R = F = 0.75
    assert sc.rouge_l("police kill the gunman", "police killed the gunman") == pytest.approx(0.75)
    # LCS 2; prediction 4 tokens, reference 2 -> P 0.5, R 1 -> F 2/3
    assert sc.rouge_l("cat dog sat mat", "cat mat") == pytest.approx(2 / 3)
    assert sc.rouge_l("", "anything at all") == 0.0


def test_classification_score():
    classes = ["Location", "Other location", "Food", "Person"]
    assert sc.classification_score("Person", "Person", all_classes=classes) == 1.0
    # "Location" is only part of the true class "Other location", so it is not counted against it
    assert sc.classification_score("Other location", "Other location", all_classes=classes) == 1.0
    assert sc.classification_score("Food or Person", "Food", all_classes=classes) == 0.5
    assert sc.classification_score("Food", "Person", all_classes=classes) == 0.0
    assert sc.classification_score("no idea", "Person", all_classes=classes) == 0.0
    with pytest.raises(KvcheckError, match="all_classes"):
        sc.classification_score("Person", "Person", all_classes=None)


def test_retrieval_count_and_first_number():
    assert sc.retrieval_score("Paragraph 12", "Paragraph 12") == 1.0
    assert sc.retrieval_score("Paragraph 12, or maybe 3", "Paragraph 12") == 0.5
    assert sc.retrieval_score("Paragraph 2", "Paragraph 12") == 0.0
    assert sc.retrieval_score("no number", "Paragraph 12") == 0.0
    with pytest.raises(KvcheckError, match="Paragraph N"):
        sc.retrieval_score("12", "twelve")
    assert sc.count_score("There are 7 unique paragraphs.", "7") == 1.0
    assert sc.count_score("7 or 8 or 9 or 7", "7") == 0.5
    assert sc.count_score("none", "7") == 0.0
    assert sc.first_number_score("The pass key is 67573. Remember", "67573") == 1.0
    assert sc.first_number_score("It is 12, no, 67573", "67573") == 0.0
    assert sc.first_number_score("67573.", " 67573 ") == 1.0  # answers are compared stripped
    assert sc.first_number_score("675731", "67573") == 0.0  # a whole number, not a prefix


@pytest.mark.parametrize("backend", ["difflib", "rapidfuzz"])
def test_edit_similarity(backend, monkeypatch):
    if backend == "rapidfuzz":
        pytest.importorskip("rapidfuzz")
    monkeypatch.setattr(sc, "EDIT_SIMILARITY_BACKEND", backend)
    # 3 matching characters of 4 on each side: 2 * 3 / 8
    assert sc.edit_similarity("abcd", "abce") == 0.75
    assert sc.edit_similarity("same", "same") == 1.0
    assert sc.edit_similarity("", "abc") == 0.0
    # the first line that is not a fence or a comment is compared: "x = foo(1)" vs "x = foo(2)" -> 18 / 20
    assert sc.code_sim_score("```python\n# next\nx = foo(1)\ny = 2\n", "x = foo(2)") == 0.9
    assert sc.code_sim_score("// only comments\n", "x = 1") == 0.0


def test_longbench_score_takes_the_best_answer_and_first_line_for_few_shot():
    assert sc.longbench_score("hotpotqa", "Paris", ["the city of Paris", "Paris"]) == 1.0
    # "city of paris" vs "paris": precision 1, recall 1/3 -> 0.5
    assert sc.longbench_score("hotpotqa", "Paris", ["the city of Paris"]) == pytest.approx(0.5)
    classes = ["Location", "Food"]
    # trec is scored on the first line only: the second line's "Food" does not count
    assert sc.longbench_score("trec", "\nLocation\nFood", ["Location"], classes) == 1.0
    assert sc.longbench_score("trec", "Location Food", ["Location"], classes) == 0.5
    assert sc.longbench_score("passage_count", "3", ["3"]) == 1.0
    assert sc.longbench_score("hotpotqa", "Paris", []) == 0.0
    with pytest.raises(KvcheckError, match="no LongBench metric for dataset 'dureader'"):
        sc.longbench_score("dureader", "x", ["x"])


def test_longbench_metric_map():
    assert sc.longbench_metric("qasper") is sc.qa_f1
    assert sc.longbench_metric("gov_report") is sc.rouge_l
    assert sc.longbench_metric("trec") is sc.classification_score
    assert sc.longbench_metric("passage_retrieval_en") is sc.retrieval_score
    assert sc.longbench_metric("passage_count") is sc.count_score
    assert sc.longbench_metric("repobench-p") is sc.code_sim_score


def test_ruler_string_matches():
    out = "The special magic numbers are 123 and 456."
    assert sc.string_match_all(out, ["123", "456", "789"]) == pytest.approx(2 / 3)
    assert sc.string_match_all("ALPHA beta", ["alpha", "Beta"]) == 1.0  # case-insensitive
    assert sc.string_match_all(out, []) == 0.0
    assert sc.string_match_part(out, ["789", "456"]) == 1.0
    assert sc.string_match_part(out, ["789"]) == 0.0
    assert sc.ruler_metric("qa_1") is sc.string_match_part
    assert sc.ruler_metric("niah_multikey_2") is sc.string_match_all
