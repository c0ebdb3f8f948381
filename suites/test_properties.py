"""kvcheck's properties suite, over the methods declared in conftest.py.

Written by `kvcheck init`; do not edit. The tests live in the kvcheck package
(kvcheck.suites.properties); `kvcheck init --check` says whether this file is current."""
from kvcheck.suites.properties import (  # noqa: F401
    pytestmark,
    test_kept_slots_follow_the_budget,
    test_full_budget_is_the_identity,
    test_batch_invariance,
    test_batch_invariance_at_the_residual_boundary,
    test_attention_is_exact_over_the_kept_set,
    test_finite_in_finite_out,
    test_bytes_follow_the_stated_formula,
)
