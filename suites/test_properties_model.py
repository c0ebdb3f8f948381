"""kvcheck's properties model suite, over the methods declared in conftest.py.

Written by `kvcheck init`; do not edit. The tests live in the kvcheck package
(kvcheck.suites.properties_model); `kvcheck init --check` says whether this file is current."""
from kvcheck.suites.properties_model import (  # noqa: F401
    pytestmark,
    test_ratio_zero_is_the_identity,
    test_two_runs_are_identical,
    test_batch_invariance_through_the_model,
    test_error_shrinks_as_the_budget_grows,
)
