"""kvpress for the tests that compare with it: imported if it can be, else the reason. kvpress pins
transformers < 5.3, so these tests run in the environment benchmarks/kvpress_env.sh builds and skip
elsewhere, unless KVCHECK_REQUIRE_ADAPTERS names the package (CI's side-environment run sets it):
then a package that will not import is an error, not a skip."""
from __future__ import annotations

import os

import pytest

REQUIRED = set(filter(None, os.environ.get("KVCHECK_REQUIRE_ADAPTERS", "").split(",")))


def _import_kvpress():
    try:
        import kvpress
    except Exception as exc:  # missing, or built for another transformers
        return None, f"{type(exc).__name__}: {exc}"
    return kvpress, ""


kvpress, KVPRESS_MISSING = _import_kvpress()
if "kvpress" in REQUIRED and kvpress is None:
    raise ImportError(f"KVCHECK_REQUIRE_ADAPTERS names kvpress, which does not import here: {KVPRESS_MISSING}")
needs_kvpress = pytest.mark.skipif(
    kvpress is None, reason=f"kvpress is not importable here ({KVPRESS_MISSING[:120]}); kvpress is compared with "
                            "in the environment benchmarks/kvpress_env.sh builds")
