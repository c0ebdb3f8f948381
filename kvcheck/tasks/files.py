"""Helpers for tasks read from local JSONL files: reading with line-numbered errors, and LongBench's
middle truncation of prompts that are longer than the budget."""
from __future__ import annotations

import json
import re
from pathlib import Path

from ..errors import KvcheckError
from .multikey import count_tokens


def safe_name(text: str) -> str:
    """``text`` with anything but letters, digits, ``.``, ``_`` and ``-`` replaced by ``_`` (task names end
    up in baseline paths)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", text)


def read_jsonl(path, fmt: str, fields: dict[str, type | tuple]) -> list[dict]:
    """The JSON objects of ``path``, one a line (blank lines skipped), each checked to hold ``fields``
    (name → type or tuple of types). ``fmt`` names the format in error messages."""
    p = Path(path)
    if not p.is_file():
        raise KvcheckError(f"{fmt} file {path} does not exist (or is not a file); point {fmt.lower()}:PATH at a "
                           "local JSONL copy of the data.")
    need = ", ".join(fields)
    rows = []
    with p.open(encoding="utf-8") as f:
        for no, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{no}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise KvcheckError(f"{where} is not valid JSON ({exc.msg}); each line of a {fmt} file must be one "
                                   f"JSON object with {need}.") from None
            if not isinstance(row, dict):
                raise KvcheckError(f"{where} is a JSON {type(row).__name__}, not an object; each line of a {fmt} "
                                   f"file must be one JSON object with {need}.")
            for name, typ in fields.items():
                if name not in row:
                    raise KvcheckError(f"{where} has no {name!r} field; each line of a {fmt} file needs {need}.")
                if not isinstance(row[name], typ):
                    raise KvcheckError(f"{where}: field {name!r} is a {type(row[name]).__name__}, expected "
                                       f"{_type_names(typ)}.")
            rows.append(row)
    if not rows:
        raise KvcheckError(f"{fmt} file {path} holds no samples; each line must be one JSON object with {need}.")
    return rows


def _type_names(typ) -> str:
    names = {str: "a string", list: "a list", int: "an integer", float: "a number", type(None): "null"}
    return " or ".join(names.get(t, t.__name__) for t in (typ if isinstance(typ, tuple) else (typ,)))


def truncate_middle(tokenizer, prompt: str, length: int, chat: bool) -> str:
    """``prompt`` if it fits in ``length`` prompt tokens (chat template included when ``chat``), else its
    first and last halves of the token budget joined (LongBench's truncation: the instructions at both
    ends survive, the middle of the context goes)."""
    if count_tokens(tokenizer, prompt, chat) <= length:
        return prompt
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    budget = length - count_tokens(tokenizer, "", chat)
    while budget > 1:
        half = budget // 2
        cut = tokenizer.decode(ids[:half], skip_special_tokens=True) + \
            tokenizer.decode(ids[len(ids) - (budget - half):], skip_special_tokens=True)
        over = count_tokens(tokenizer, cut, chat) - length
        if over <= 0:
            return cut
        budget -= max(1, over)  # re-encoding the joined halves can merge or split a token or two
    raise KvcheckError(f"a prompt cannot be cut to {length} tokens; use a longer length.")
