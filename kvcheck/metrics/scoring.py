"""Answer scoring, as pure functions on (prediction, ground truth) strings: LongBench's metrics and
dataset → metric map, RULER's string matches, and the synthetic tasks' first-number match. Every
scorer returns a float in [0, 1]; a task's accuracy is the mean over its samples.

Where kvcheck differs from LongBench's own ``metrics.py``:

- ROUGE-L uses Google's ``rouge-score`` package (``pip install rouge-score``; imported only when
  needed), F-measure of ``rougeL``. LongBench uses the ``rouge`` package, whose tokeniser differs, so
  absolute values differ slightly; comparisons between methods are unaffected.
- Code edit similarity: LongBench uses ``fuzzywuzzy``'s ``fuzz.ratio``. kvcheck uses ``rapidfuzz``'s
  ``fuzz.ratio`` when it is installed (the same Indel ratio as fuzzywuzzy with python-Levenshtein) and
  otherwise ``difflib.SequenceMatcher.ratio`` (fuzzywuzzy's pure-Python fallback); both rounded to a
  whole percent as fuzzywuzzy does. :data:`EDIT_SIMILARITY_BACKEND` says which one is in use.
- Classification: LongBench's version removes items from the list it iterates over (so it can skip
  one) and compares a list with ``0``, so its similarity fallback never runs; kvcheck applies the
  rule to every item and, like LongBench in practice, scores 0 when no class name appears.
"""
from __future__ import annotations

import difflib
import importlib.util
import re
import string
from collections import Counter
from typing import Callable, Iterable, Sequence

from ..errors import KvcheckError

# ---- normalisation and QA F1 ---------------------------------------------------------------------

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = set(string.punctuation)


def normalize_answer(s: str) -> str:
    """LongBench / SQuAD normalisation: lowercase, drop punctuation, drop articles, collapse whitespace."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _PUNCTUATION)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def token_f1(prediction_tokens: Sequence[str], ground_truth_tokens: Sequence[str]) -> float:
    """F1 of the multiset overlap of two token lists (0 when either is empty)."""
    common = Counter(prediction_tokens) & Counter(ground_truth_tokens)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision = same / len(prediction_tokens)
    recall = same / len(ground_truth_tokens)
    return 2 * precision * recall / (precision + recall)


def qa_f1(prediction: str, ground_truth: str, **_) -> float:
    """Token F1 between the normalised prediction and answer (LongBench's ``qa_f1_score``)."""
    return token_f1(normalize_answer(prediction).split(), normalize_answer(ground_truth).split())


# ---- ROUGE-L -------------------------------------------------------------------------------------

_ROUGE = None


def _rouge_scorer():
    global _ROUGE
    if _ROUGE is None:
        try:
            from rouge_score import rouge_scorer
        except ImportError as e:
            raise KvcheckError("ROUGE-L scoring needs the rouge-score package: `pip install rouge-score` "
                               "(or `pip install kvcheck[report]`).") from e
        _ROUGE = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    return _ROUGE


def rouge_l(prediction: str, ground_truth: str, **_) -> float:
    """ROUGE-L F-measure (``rouge-score``); 0 when either side has no scorable token."""
    return float(_rouge_scorer().score(ground_truth, prediction)["rougeL"].fmeasure)


# ---- classification, retrieval, count ------------------------------------------------------------

def classification_score(prediction: str, ground_truth: str, all_classes: Iterable[str] | None = None,
                         **_) -> float:
    """LongBench few-shot classification: the class names found in the prediction, less those that are
    only part of the true class name; 1 / (number found) if the true class is among them, else 0."""
    if not all_classes:
        raise KvcheckError("classification scoring needs the list of class names (LongBench's `all_classes`).")
    found = [c for c in all_classes if c in prediction]
    found = [c for c in found if not (c in ground_truth and c != ground_truth)]
    return 1.0 / len(found) if ground_truth in found else 0.0


def _numbers_matching(prediction: str, target: str) -> float:
    numbers = re.findall(r"\d+", prediction)
    return sum(n == target for n in numbers) / len(numbers) if numbers else 0.0


def retrieval_score(prediction: str, ground_truth: str, **_) -> float:
    """LongBench passage retrieval: share of the numbers in the prediction equal to the paragraph number
    of the answer (``"Paragraph 12"``)."""
    m = re.search(r"Paragraph (\d+)", ground_truth)
    if m is None:
        raise KvcheckError(f"retrieval answer {ground_truth!r} does not name a paragraph (\"Paragraph N\").")
    return _numbers_matching(prediction, m.group(1))


def count_score(prediction: str, ground_truth: str, **_) -> float:
    """LongBench passage count: share of the numbers in the prediction equal to the true count."""
    return _numbers_matching(prediction, str(ground_truth).strip())


def first_number_score(prediction: str, ground_truth: str, **_) -> float:
    """Retrieval accuracy for a single key: 1 if the first number in the prediction is the answer."""
    m = re.search(r"\d+", prediction)
    return float(m is not None and m.group(0) == str(ground_truth).strip())


def first_line(prediction: str) -> str:
    """The first line of a prediction, leading newlines dropped (LongBench's few-shot post-processing)."""
    return prediction.lstrip("\n").split("\n")[0]


# ---- code ----------------------------------------------------------------------------------------

if importlib.util.find_spec("rapidfuzz") is not None:
    EDIT_SIMILARITY_BACKEND = "rapidfuzz"
else:
    EDIT_SIMILARITY_BACKEND = "difflib"


def edit_similarity(a: str, b: str) -> float:
    """fuzzywuzzy-style ``ratio(a, b) / 100``: similarity in [0, 1], rounded to a whole percent."""
    if EDIT_SIMILARITY_BACKEND == "rapidfuzz":
        from rapidfuzz import fuzz

        return round(fuzz.ratio(a, b)) / 100
    return round(100 * difflib.SequenceMatcher(None, a, b).ratio()) / 100


def code_sim_score(prediction: str, ground_truth: str, **_) -> float:
    """LongBench code completion: edit similarity of the first prediction line that is not a comment or a
    code fence (no `` ` ``, ``#`` or ``//``) with the true next line."""
    line = next((ln for ln in prediction.lstrip("\n").split("\n")
                 if "`" not in ln and "#" not in ln and "//" not in ln), "")
    return edit_similarity(line, ground_truth)


# ---- LongBench ------------------------------------------------------------------------------------

LONGBENCH_METRICS: dict[str, Callable[..., float]] = {
    "narrativeqa": qa_f1, "qasper": qa_f1, "multifieldqa_en": qa_f1, "hotpotqa": qa_f1, "2wikimqa": qa_f1,
    "musique": qa_f1, "triviaqa": qa_f1,
    "gov_report": rouge_l, "qmsum": rouge_l, "multi_news": rouge_l, "samsum": rouge_l,
    "trec": classification_score, "lsht": classification_score,
    "passage_retrieval_en": retrieval_score, "passage_count": count_score,
    "lcc": code_sim_score, "repobench-p": code_sim_score,
}
FIRST_LINE_DATASETS = frozenset({"trec", "triviaqa", "samsum", "lsht"})  # scored on the first output line


def longbench_metric(dataset: str) -> Callable[..., float]:
    if dataset not in LONGBENCH_METRICS:
        raise KvcheckError(f"no LongBench metric for dataset {dataset!r}; known: "
                           f"{', '.join(sorted(LONGBENCH_METRICS))}.")
    return LONGBENCH_METRICS[dataset]


def longbench_score(dataset: str, prediction: str, answers: Sequence[str],
                    all_classes: Sequence[str] | None = None) -> float:
    """LongBench's per-sample score: the dataset's metric, best over the reference answers (first line
    of the prediction only for the few-shot datasets)."""
    metric = longbench_metric(dataset)
    if dataset in FIRST_LINE_DATASETS:
        prediction = first_line(prediction)
    return max((metric(prediction, gt, all_classes=all_classes) for gt in answers), default=0.0)


# ---- RULER ---------------------------------------------------------------------------------------

def string_match_all(prediction: str, references: Sequence[str]) -> float:
    """RULER: share of the references contained in the prediction (case-insensitive)."""
    if not references:
        return 0.0
    p = prediction.lower()
    return sum(r.lower() in p for r in references) / len(references)


def string_match_part(prediction: str, references: Sequence[str]) -> float:
    """RULER (QA tasks): 1 if any reference is contained in the prediction (case-insensitive)."""
    p = prediction.lower()
    return float(any(r.lower() in p for r in references))


def ruler_metric(task: str) -> Callable[[str, Sequence[str]], float]:
    """RULER's metric for a task name: ``string_match_part`` for ``qa*``, else ``string_match_all``."""
    return string_match_part if task.startswith("qa") else string_match_all
