"""kvcheck's fidelity suite, over the methods declared in conftest.py.

Written by `kvcheck init`; do not edit. The tests live in the kvcheck package
(kvcheck.suites.fidelity); `kvcheck init --check` says whether this file is current."""
from kvcheck.suites.fidelity import test_fidelity  # noqa: F401
