"""kvcheck's length drift suite, over the methods declared in conftest.py.

Written by `kvcheck init`; do not edit. The tests live in the kvcheck package
(kvcheck.suites.length_drift); `kvcheck init --check` says whether this file is current."""
from kvcheck.suites.length_drift import test_length_drift  # noqa: F401
