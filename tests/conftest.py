"""Shared fixtures for kvcheck's own tests: a tiny random Llama (mechanics only) and the real
default model (accuracy and equivalence claims)."""
from __future__ import annotations

import os

import pytest

from kvcheck.tiny_model import make_tiny

pytest_plugins = ["pytester"]


def pytest_collection_modifyitems(config, items):
    """``slow`` tests belong to the full tier (the marker's meaning): they run with ``--kvcheck-tier
    full`` or when selected with ``-m slow``, and are skipped otherwise, so `pytest tests/` stays fast."""
    if config.getoption("--kvcheck-tier") == "full" or "slow" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason="slow: runs with -m slow or --kvcheck-tier full")
    for item in items:
        if item.get_closest_marker("slow"):
            item.add_marker(skip)


# pytester gives each run its own HOME; keep the converted default model where it already is, so a
# subprocess run loads it in a second instead of converting the GGUF file again
os.environ.setdefault("KVCHECK_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "kvcheck"))


@pytest.fixture(scope="session")
def tiny_lm():
    return make_tiny()


@pytest.fixture(scope="session")
def tiny_lm_d64():
    """Tiny model with the default model's head geometry (head_dim 64, GQA 3:1) for byte accounting."""
    return make_tiny(layers=2, q_heads=3, kv_heads=1, hidden=192)


@pytest.fixture(scope="session")
def real_lm():
    from kvcheck.model import load_model

    return load_model()
