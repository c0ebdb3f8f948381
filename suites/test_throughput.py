"""kvcheck's throughput suite, over the methods declared in conftest.py.

Written by `kvcheck init`; do not edit. The tests live in the kvcheck package
(kvcheck.suites.throughput); `kvcheck init --check` says whether this file is current."""
from kvcheck.suites.throughput import test_throughput, test_throughput_gpu  # noqa: F401
