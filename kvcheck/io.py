"""Atomic writes: a temp file in the same folder, fsync, then ``os.replace`` — a reader (or a crash)
sees the old file or the new one, never half of either; and the one JSON reader of input files."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from .errors import KvcheckError


def dumps(data) -> str:
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def read_json(path):
    """The parsed JSON file at ``path``; a folder, a missing file or bad JSON is a KvcheckError."""
    path = Path(path)
    if path.is_dir():
        raise KvcheckError(f"{path} is a folder; pass the JSON files themselves (e.g. {path}/*.json).")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise KvcheckError(f"{path} does not exist; check the path.") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise KvcheckError(f"{path} is not valid JSON ({exc}); regenerate it, or remove it.") from None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes_atomic(path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_json_atomic(path, data) -> None:
    write_bytes_atomic(path, dumps(data).encode("utf-8"))


def check_output(path, flag: str) -> None:
    """Fail now, before any work, if ``path`` could not be written at the end: it is a folder, or its
    first existing ancestor is not a writable folder."""
    p = Path(path)
    folder = p.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if p.is_dir():
        raise KvcheckError(f"{flag} {str(p)!r} is a folder; pass a file path.")
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        raise KvcheckError(f"{flag} {str(p)!r} cannot be written: {str(folder)!r} is not a writable folder; "
                           "pass a path in a writable folder.")
