"""Hypothesis profiles for the property suites, and the fixtures they use. The ``conftest.py`` that
``kvcheck init`` writes imports them (``from kvcheck.suites.fixtures import *``).

Pick a profile with ``--hypothesis-profile NAME``; without it, ``ci`` when the ``CI`` environment
variable is set (to anything but ``""``, ``0`` or ``false``), else ``dev``:

- ``dev``: few examples, for the edit-run loop; failures are kept in the local example database
  (``.hypothesis/``) and replayed first on the next run.
- ``ci``: derandomized (the same examples on every run and machine), no example database, the
  reproduce blob printed on failure (paste it into ``@reproduce_failure``). It replaces hypothesis'
  own ``ci`` profile, to set the example count.
- ``nightly``: many examples, fresh randomness every run.

No profile has a deadline or the too-slow health check: runners are shared and noisy, and speed is
the throughput suite's business. Each property asks for a share of the profile's ``max_examples``
(``share`` in the test files), so one number scales the whole suite.
"""
from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

__all__ = ["pytest_configure", "tiny_lm", "one_thread", "default_profile"]

_BASE = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", settings.get_profile("default"), max_examples=5, **_BASE)
settings.register_profile("ci", settings.get_profile("default"), max_examples=6, derandomize=True, database=None,
                          print_blob=True, **_BASE)
settings.register_profile("nightly", settings.get_profile("default"), max_examples=200, **_BASE)


def default_profile() -> str:
    return "ci" if os.environ.get("CI", "").lower() not in ("", "0", "false") else "dev"


def pytest_configure(config):
    # Always load explicitly: when this file is imported after hypothesis' plugin has configured (it
    # is not an initial conftest, e.g. `pytest .`), `--hypothesis-profile ci` has already loaded
    # hypothesis' own "ci" (and `dev` / `nightly` are unknown there: pass the suites' folder, which
    # makes its conftest an initial one); loading the name again picks ours.
    settings.load_profile(config.getoption("hypothesis_profile", default=None) or default_profile())


@pytest.fixture(scope="session")
def tiny_lm():
    """A tiny random Llama (3 layers, 4 query / 2 KV heads, head_dim 16) with kvcheck attention, built
    once per session: properties check mechanics, not accuracy, so they never load the real model."""
    from kvcheck.tiny_model import make_tiny

    return make_tiny()


@pytest.fixture(scope="module")
def one_thread():
    """Tensors this small only lose to thread hand-offs (badly on a busy machine)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
