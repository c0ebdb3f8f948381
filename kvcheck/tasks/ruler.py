"""RULER (Hsieh et al., 2024) from a local JSONL file as RULER's ``prepare.py`` writes it
(``<task>/validation.jsonl``): one object a line with ``index``, ``input``, ``outputs`` (the reference
strings) and optionally ``length`` and ``answer_prefix``.

The prompt is ``input + answer_prefix`` as written (RULER fills its own template at preparation, so
no chat template is added and nothing is truncated: prepare the file at the length you want). The task
is named for the folder (``niah_single_1``, ``vt``, ``qa_1``, …; the file's stem when the folder is not a
RULER task). Scored as RULER scores it: for ``qa*`` tasks 1 if any reference is in the output
(``string_match_part``), otherwise the share of the references found (``string_match_all``), both
case-insensitive; new tokens per RULER's ``tokens_to_generate`` for the task family.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import KvcheckError
from ..metrics.scoring import ruler_metric
from .base import Sample, Task
from .files import read_jsonl, safe_name
from .multikey import count_tokens

FIELDS = {"index": int, "input": str, "outputs": list}
MAX_NEW_TOKENS = (("niah", 128), ("vt", 30), ("variable_tracking", 30), ("cwe", 120), ("common_words", 120),
                  ("fwe", 50), ("freq_words", 50), ("qa", 32))
DEFAULT_NEW_TOKENS = 128


def ruler_task(path) -> str:
    """The RULER task a file holds: its folder's name when that is a RULER task, else the file's stem."""
    p = Path(path)
    folder = p.parent.name
    return folder if any(folder.startswith(prefix) for prefix, _ in MAX_NEW_TOKENS) else p.stem


def new_tokens(task: str) -> int:
    return next((n for prefix, n in MAX_NEW_TOKENS if task.startswith(prefix)), DEFAULT_NEW_TOKENS)


def load_rows(path) -> list[dict]:
    rows = read_jsonl(path, "RULER", FIELDS)
    seen = set()
    for no, row in enumerate(rows, 1):
        where = f"{path}: sample {no} (index {row['index']})"
        if not row["outputs"] or not all(isinstance(o, str) for o in row["outputs"]):
            raise KvcheckError(f"{where}: 'outputs' must be a non-empty list of strings.")
        if not isinstance(row.get("answer_prefix", ""), str):
            raise KvcheckError(f"{where}: 'answer_prefix' must be a string.")
        if row["index"] in seen:
            raise KvcheckError(f"{where}: index is repeated; every sample needs its own index.")
        seen.add(row["index"])
    return rows


def load(path) -> Task:
    """A task over the RULER file at ``path`` (read and checked now)."""
    rows = load_rows(path)
    task = ruler_task(path)
    name = "ruler-" + safe_name(task)
    metric = ruler_metric(task)

    def make(tokenizer, n, length, seed):  # the file's order; seed unused
        out = []
        for row in rows[:n]:
            prompt = row["input"] + row.get("answer_prefix", "")
            if count_tokens(tokenizer, prompt) > length:
                raise KvcheckError(f"{path}: sample index {row['index']} has {count_tokens(tokenizer, prompt)} "
                                   f"prompt tokens, over the {length} allowed; RULER prompts are not truncated, "
                                   "so prepare the data at a shorter length or allow a longer one.")
            out.append(Sample(id=f"{name}-{row['index']:05d}", prompt=prompt, answer=row["outputs"][0], task=name,
                              meta={"outputs": list(row["outputs"]), "length": row.get("length")}))
        return out

    def score(sample: Sample, output: str) -> float:
        return metric(output, sample.meta["outputs"])

    return Task(name, "Synthetic" if not task.startswith("qa") else "QA", make, score,
                max_new_tokens=new_tokens(task), source=str(path), size=len(rows))
