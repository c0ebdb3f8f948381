"""kvcheck's accuracy suite, over the methods declared in conftest.py.

Written by `kvcheck init`; do not edit. The tests live in the kvcheck package
(kvcheck.suites.accuracy); `kvcheck init --check` says whether this file is current."""
from kvcheck.suites.accuracy import test_accuracy  # noqa: F401
