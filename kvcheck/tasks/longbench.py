"""LongBench (Bai et al., 2024) from a local JSONL file: one object a line with ``input``, ``context``,
``answers``, ``dataset``, ``_id`` (and ``length``, ``all_classes``), as in LongBench's ``data/*.jsonl``.

Prompts use LongBench's per-dataset templates and go through the chat template except for the few-shot
and code datasets (as LongBench's ``pred.py`` does); a prompt longer than the length budget keeps its
first and last halves. Each sample is scored with its dataset's metric (best over the reference
answers, see :func:`kvcheck.metrics.scoring.longbench_score`) and carries the dataset's task type.
Generation stops at LongBench's per-dataset new-token limit (the largest one when a file mixes datasets).
"""
from __future__ import annotations

from pathlib import Path

from ..errors import KvcheckError
from ..metrics.scoring import LONGBENCH_METRICS, longbench_score
from .base import Sample, Task
from .files import read_jsonl, safe_name, truncate_middle
from .types import LONGBENCH_TASK_TYPES

FIELDS = {"input": str, "context": str, "answers": list, "dataset": str, "_id": str}

PROMPTS = {
    "narrativeqa": (
        "You are given a story, which can be either a novel or a movie script, and a question. "
        "Answer the question as concisely as you can, using a single phrase if possible. Do not "
        "provide any explanation.\n\nStory: {context}\n\nNow, answer the question based on the story as "
        "concisely as you can, using a single phrase if possible. Do not provide any "
        "explanation.\n\nQuestion: {input}\n\nAnswer:"
    ),
    "qasper": (
        "You are given a scientific article and a question. Answer the question as concisely as you "
        "can, using a single phrase or sentence if possible. If the question cannot be answered "
        "based on the information in the article, write \"unanswerable\". If the question is a yes/no "
        "question, answer \"yes\", \"no\", or \"unanswerable\". Do not provide any explanation.\n\nArticle: "
        "{context}\n\n Answer the question based on the above article as concisely as you can, using a "
        "single phrase or sentence if possible. If the question cannot be answered based on the "
        "information in the article, write \"unanswerable\". If the question is a yes/no question, "
        "answer \"yes\", \"no\", or \"unanswerable\". Do not provide any explanation.\n\nQuestion: "
        "{input}\n\nAnswer:"
    ),
    "multifieldqa_en": (
        "Read the following text and answer briefly.\n\n{context}\n\nNow, answer the following question "
        "based on the above text, only give me the answer and do not output any other "
        "words.\n\nQuestion: {input}\nAnswer:"
    ),
    "hotpotqa": (
        "Answer the question based on the given passages. Only give me the answer and do not output "
        "any other words.\n\nThe following are given passages.\n{context}\n\nAnswer the question based on "
        "the given passages. Only give me the answer and do not output any other words.\n\nQuestion: "
        "{input}\nAnswer:"
    ),
    "gov_report": (
        "You are given a report by a government agency. Write a one-page summary of the "
        "report.\n\nReport:\n{context}\n\nNow, write a one-page summary of the report.\n\nSummary:"
    ),
    "qmsum": (
        "You are given a meeting transcript and a query containing a question or instruction. Answer "
        "the query in one or more sentences.\n\nTranscript:\n{context}\n\nNow, answer the query based on "
        "the above meeting transcript in one or more sentences.\n\nQuery: {input}\nAnswer:"
    ),
    "multi_news": (
        "You are given several news passages. Write a one-page summary of all news. "
        "\n\nNews:\n{context}\n\nNow, write a one-page summary of all the news.\n\nSummary:"
    ),
    "trec": (
        "Please determine the type of the question below. Here are some examples of "
        "questions.\n\n{context}\n{input}"
    ),
    "triviaqa": (
        "Answer the question based on the given passage. Only give me the answer and do not output "
        "any other words. The following are some examples.\n\n{context}\n\n{input}"
    ),
    "samsum": (
        "Summarize the dialogue into a few short sentences. The following are some "
        "examples.\n\n{context}\n\n{input}"
    ),
    "passage_count": (
        "There are some paragraphs below sourced from Wikipedia. Some of them may be duplicates. "
        "Please carefully read these paragraphs and determine how many unique paragraphs there are "
        "after removing duplicates. In other words, how many non-repeating paragraphs are there in "
        "total?\n\n{context}\n\nPlease enter the final count of unique paragraphs after removing "
        "duplicates. The output format should only contain the number, such as 1, 2, 3, and so "
        "on.\n\nThe final answer is: "
    ),
    "passage_retrieval_en": (
        "Here are 30 paragraphs from Wikipedia, along with an abstract. Please determine which "
        "paragraph the abstract is from.\n\n{context}\n\nThe following is an abstract.\n\n{input}\n\nPlease "
        "enter the number of the paragraph that the abstract is from. The answer format must be like "
        "\"Paragraph 1\", \"Paragraph 2\", etc.\n\nThe answer is: "
    ),
    "lcc": (
        "Please complete the code given below. \n{context}Next line of code:\n"
    ),
    "repobench-p": (
        "Please complete the code given below. \n{context}{input}Next line of code:\n"
    ),
}
PROMPTS["2wikimqa"] = PROMPTS["musique"] = PROMPTS["hotpotqa"]

MAX_NEW_TOKENS = {
    "narrativeqa": 128, "qasper": 128, "multifieldqa_en": 64, "hotpotqa": 32, "2wikimqa": 32, "musique": 32,
    "gov_report": 512, "qmsum": 512, "multi_news": 512, "trec": 64, "triviaqa": 32, "samsum": 128,
    "passage_count": 32, "passage_retrieval_en": 32, "lcc": 64, "repobench-p": 64,
}
NO_CHAT = frozenset({"trec", "triviaqa", "samsum", "lcc", "repobench-p"})  # raw prompts, as LongBench's pred.py
DATASETS = tuple(sorted(PROMPTS))
assert set(PROMPTS) == set(MAX_NEW_TOKENS) <= set(LONGBENCH_METRICS) & set(LONGBENCH_TASK_TYPES)


def load_rows(path) -> list[dict]:
    """The file's records, checked: required fields and types, a known dataset, string answers,
    class names for the classification datasets, unique ids."""
    rows = read_jsonl(path, "LongBench", FIELDS)
    seen = set()
    for no, row in enumerate(rows, 1):
        where = f"{path}: sample {no} (_id {row['_id']!r})"
        if row["dataset"] not in PROMPTS:
            raise KvcheckError(f"{where}: dataset {row['dataset']!r} is not supported; kvcheck reads the English "
                               f"and code LongBench datasets: {', '.join(DATASETS)}.")
        if not row["answers"] or not all(isinstance(a, str) for a in row["answers"]):
            raise KvcheckError(f"{where}: 'answers' must be a non-empty list of strings.")
        classes = row.get("all_classes")
        if LONGBENCH_METRICS[row["dataset"]].__name__ == "classification_score" and \
                not (isinstance(classes, list) and classes and all(isinstance(c, str) for c in classes)):
            raise KvcheckError(f"{where}: dataset {row['dataset']!r} is scored by class name and needs "
                               "'all_classes', a list of strings.")
        if row["_id"] in seen:
            raise KvcheckError(f"{where}: _id is repeated; every sample needs its own _id.")
        seen.add(row["_id"])
    return rows


def samples_from_rows(tokenizer, rows: list[dict], name: str, n: int | None, length: int) -> list[Sample]:
    """The first ``n`` records (all when None) as samples whose prompts fit ``length`` tokens."""
    out = []
    for row in rows[:n]:
        ds = row["dataset"]
        chat = ds not in NO_CHAT
        prompt = truncate_middle(tokenizer, PROMPTS[ds].format(context=row["context"], input=row["input"]),
                                 length, chat)
        out.append(Sample(id=f"{name}-{row['_id']}", prompt=prompt, answer=row["answers"][0], task=name,
                          task_type=LONGBENCH_TASK_TYPES[ds], chat=chat,
                          meta={"dataset": ds, "answers": list(row["answers"]),
                                "all_classes": row.get("all_classes"), "length": row.get("length")}))
    return out


def score(sample: Sample, output: str) -> float:
    m = sample.meta
    return longbench_score(m["dataset"], output, m["answers"], m["all_classes"])


def load(path) -> Task:
    """A task over the LongBench file at ``path`` (read and checked now)."""
    rows = load_rows(path)
    name = "longbench-" + safe_name(Path(path).stem)
    types = {LONGBENCH_TASK_TYPES[r["dataset"]] for r in rows}

    def make(tokenizer, n, length, seed):  # the file's order; seed unused
        return samples_from_rows(tokenizer, rows, name, n, length)

    # a file mixing datasets of several types is typed "Mixed"; its samples still carry their own types
    return Task(name, types.pop() if len(types) == 1 else "Mixed", make, score,
                max_new_tokens=max(MAX_NEW_TOKENS[r["dataset"]] for r in rows), source=str(path), size=len(rows))
