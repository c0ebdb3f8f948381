"""kvcheck's suites, shipped in the package so any repository can run them.

``kvcheck init`` writes one thin test file per suite into your repository (``from
kvcheck.suites.fidelity import test_fidelity``); the suites run over every method your
``conftest.py`` declares with ``@kvcheck.method``. :mod:`kvcheck.suites.catalog` holds each suite as a
value: its name (the baseline folder), what it measures, and its tolerance and sample rules.
"""
