"""kvcheck's properties codec suite, over the methods declared in conftest.py.

Written by `kvcheck init`; do not edit. The tests live in the kvcheck package
(kvcheck.suites.properties_codec); `kvcheck init --check` says whether this file is current."""
from kvcheck.suites.properties_codec import (  # noqa: F401
    pytestmark,
    test_round_trip_error_within_the_analytic_bound,
    test_dequantized_output_is_a_fixed_point,
)
