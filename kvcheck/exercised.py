"""How many examples of a property exercised the rule it checks: a property that never did fails.

A property draws its examples at random, so an example may never reach the rule it claims to check (no
token evicted while generating, a cut decided only by a protected window). The test says which rules it
exercises and which apply to a method, notes per example whether each happened, and fails when one
that applies never did::

    EVICTED_WHILE_GENERATING = ("an eviction while generating", lambda m: isinstance(m, DecodeEviction))

    @exercises(EVICTED_WHILE_GENERATING)
    @share(1.0)
    @given(data=st.data())
    def test_my_property(kv_method, data):
        ...
        note(EVICTED_WHILE_GENERATING, evicted)  # the same (rule, applies) pair

The counts of every run are kept in the test's report (``user_properties``) and summed up at the end of
the session (:func:`summary_lines`).
"""
from __future__ import annotations

import functools
from collections.abc import Callable

import pytest

PROPERTY = "kvcheck_exercised"  # the user_properties key of a test's counts

Rule = tuple[str, Callable[[object], bool]]  # (what the rule is, whether it applies to a method)

_tally: dict[str, list[int]] | None = None  # rule → [examples, examples that exercised it]
_method = None  # the method of the property running now
last: dict[str, list[int]] | None = None  # the counts of the test that ran last (read by the plugin)


def note(rule: Rule, happened: bool) -> None:
    """Count one example for ``rule``, and whether it exercised it: a no-op outside :func:`exercises`
    and where the rule does not apply to the method (its examples count for nothing)."""
    if _tally is None or not rule[1](_method):
        return
    count = _tally.setdefault(rule[0], [0, 0])
    count[0] += 1
    count[1] += bool(happened)


def exercises(*rules: Rule):
    """Decorate a property (outside ``@given``): each ``(rule, applies)`` whose ``applies(kv_method)`` is
    true must be noted as exercised by at least one example, or the test fails saying so."""
    def decorate(test):
        @functools.wraps(test)
        def run(*args, **kwargs):
            global _tally, _method, last
            method = kwargs.get("kv_method")
            _tally, _method = {}, method
            try:
                test(*args, **kwargs)
            finally:
                last, _tally, _method = _tally, None, None
            missing = [(rule, last.get(rule, [0, 0])[0]) for rule, applies in rules
                       if applies(method) and last.get(rule, [0, 0])[1] == 0]
            if missing:
                what = "; ".join(f"{rule!r} in none of {n} examples" for rule, n in missing)
                name = method.describe() if hasattr(method, "describe") else repr(method)
                pytest.fail(f"{name}: the property never exercised its rule: {what}. Its examples passed without "
                            "testing it: run more examples (--hypothesis-profile nightly) or declare the method at "
                            "a setting where the rule acts.", pytrace=False)
        return run
    return decorate


def summary_lines(reports) -> list[str]:
    """Per property and rule: examples that exercised it / examples, summed over methods, with the
    fewest any one method got."""
    totals: dict[tuple[str, str], list[int]] = {}
    for rep in reports:
        counts = dict(getattr(rep, "user_properties", ())).get(PROPERTY)
        if not counts:
            continue
        test = rep.nodeid.split("::")[-1].split("[")[0]
        for rule, (n, hit) in counts.items():
            t = totals.setdefault((test, rule), [0, 0, None])
            t[0] += n
            t[1] += hit
            t[2] = hit if t[2] is None else min(t[2], hit)
    return [f"{test}: {rule}: {hit} of {n} examples (fewest for one method: {least})"
            for (test, rule), (n, hit, least) in sorted(totals.items())]
