"""The gate: the ``kv_gate`` fixture object that runs a suite on a method and judges the result.

:meth:`Gate.run` decides whether the run is timed (from the stored baseline: timings are measured
only where a perf entry of this machine would judge them), measures with the suite value, and
checks. :meth:`Gate.check` reads the baseline once through the session's store, calls the pure
:func:`kvcheck.judge.judge`, records the rows for the table, stages the write the update mode asks
for, and :func:`enforce` turns the verdict into a pass, a failure or a skip (the only place that calls
``pytest.fail`` or ``pytest.skip``).
"""
from __future__ import annotations

import dataclasses
import datetime
import platform
import subprocess

import pytest

from . import judge as jd
from .errors import KvcheckError
from .judge import Measured, Row, Verdict
from .store import SCHEMA, BaselineError, BaselineKey


def _git_sha() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              timeout=5).stdout.strip() or None
    except Exception:
        return None


def provenance(session) -> dict:
    import torch
    import transformers

    from .defaults import __version__

    return {"kvcheck": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "python": platform.python_version(), "device": session.device_name, "git_sha": _git_sha(),
            "written": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}


def header(session, suite: str, method) -> dict:
    """The ``key`` object a baseline file records."""
    return {"model": session.model_name, "tier": session.tier.name, "dtype": session.dtype_name,
            "suite": suite, "method": method.name, "method_id": method.id, "params": dict(method.params())}


def enforce(verdict: Verdict) -> None:
    if verdict.fail:
        pytest.fail(verdict.fail, pytrace=False)
    if verdict.skip:
        pytest.skip(verdict.skip)


class Gate:
    """The ``kv_gate`` fixture: ``kv_gate.run(FIDELITY, kv_method)`` measures and judges one suite;
    ``kv_gate.check(suite, method, Measured(...))`` judges a measurement made by hand."""

    def __init__(self, session, request):
        self.session, self.request = session, request

    @property
    def runner(self):
        """The session's :class:`~kvcheck.runner.Runner` (the model, shared prefills and references),
        loaded on first use; a model that cannot be loaded ends the run with the reason."""
        try:
            return self.session.runner
        except KvcheckError as exc:
            pytest.exit(f"kvcheck: {exc}", returncode=4)

    def _suite_name(self, suite) -> str:
        return suite if isinstance(suite, str) else suite.name

    def _context(self, suite_name: str, method, stored_path) -> jd.Context:
        s = self.session
        test_file = self.request.node.nodeid.split("::")[0]
        return jd.Context(suite=suite_name, method_id=method.id, header=header(s, suite_name, method),
                          path=str(stored_path), machine=s.machine_key, software=s.software_key,
                          provenance=provenance(s),
                          accept=f"pytest {test_file} -k '{method.id}' --kvcheck-update=",
                          update=s.update, strict_perf=s.strict_perf, reference=_is_reference(method))

    def _load(self, key: BaselineKey):
        try:
            return self.session.store.load(key)
        except BaselineError as exc:
            pytest.fail(f"kvcheck: {exc}", pytrace=False)

    def _random_baseline(self, suite_name: str, method) -> dict | None:
        """random's committed per-sample records in ``suite_name`` at ``method``'s ratio (seed 0), or None
        where the check does not apply or no such baseline is committed."""
        if not _beats_random_applies(suite_name, method):
            return None
        from .methods import RandomKeep

        stored = self._load(self.session.key(suite_name, RandomKeep(compression_ratio=method.compression_ratio).id))
        samples = (stored or {}).get("samples")
        return samples if isinstance(samples, dict) else None

    def run(self, suite, method) -> Verdict:
        """Measure ``method`` with ``suite`` (timed only where timings would be judged) and check it.
        When the baseline will be written (none yet, ``--kvcheck-update=all``, or ``new`` adding metrics
        the baseline predates), the suite's noise floor is measured too: the same runs under its benign
        perturbations."""
        from .suites.base import SuiteContext

        key = self.session.key(suite.name, method.id)
        stored = self._load(key)
        untimed = (jd.untimed_reason(stored, self._context(suite.name, method, self.session.store.path(key)))
                   if suite.timed else None)
        raw = suite.measure(self.runner, method, SuiteContext(untimed=untimed, options=suite.options,
                                                              variant=getattr(self.session, "layout", 0)))
        variants = []
        runs = getattr(self.session, "noise_runs", None)
        runs = suite.noise.variants if runs is None and suite.noise is not None else runs
        adds = (self.session.update == "new" and stored is not None
                and bool(set(raw.values) - set(stored.get("metrics") or {})))  # metrics the baseline predates
        if suite.noise is not None and (stored is None or self.session.update == "all" or adds):
            for v in range(1, runs + 1):
                self.session.progress(f"{suite.name} {method.id}: noise floor, perturbed run {v} of {runs}")
                variants.append(suite.measure(self.runner, method,
                                              SuiteContext(untimed=untimed, options=suite.options, variant=v)))
        measured = suite.finalize(raw, variants)
        if untimed is None and suite.timed and stored is not None and not self.session.update:
            ctx = self._context(suite.name, method, self.session.store.path(key))
            if timing_suspect(jd.judge(stored, measured, ctx, SCHEMA), measured):
                self.session.progress(f"{suite.name} {method.id}: a timing regressed; measuring again before failing")
                again = suite.measure(self.runner, method, SuiteContext(untimed=None, options=suite.options,
                                                                        variant=getattr(self.session, "layout", 0)))
                measured = suite.finalize(again, variants)
        return self.check(suite, method, measured)

    def check(self, suite, method, measured: Measured) -> Verdict:
        """Judge ``measured`` against the stored baseline; fail or skip the test as the verdict says."""
        s, name = self.session, self._suite_name(suite)
        feeds = getattr(suite, "feeds_negatives", name == "accuracy")
        if feeds and measured.samples:
            s.record_scores(self.request, method.id, {k: v["score"] for k, v in measured.samples.items()})
        key = s.key(name, method.id)
        path = s.store.path(key)
        stored = self._load(key)
        ctx = self._context(name, method, path)
        random_base = self._random_baseline(name, method) if measured.samples is not None else None
        if random_base is not None:
            ctx = dataclasses.replace(ctx, ratio=method.compression_ratio)
        verdict = jd.judge(stored, measured, ctx, SCHEMA, random_base=random_base)
        for row in verdict.rows:
            row.method_name, row.params = method.name, dict(method.params())
        s.record(self.request, verdict.rows)
        if verdict.write is not None:
            s.store.stage(path, verdict.write)
        enforce(verdict)
        return verdict


def _beats_random_applies(suite_name: str, method) -> bool:
    """Accuracy suites judge an eviction method against ``random`` at its ratio (not random itself)."""
    from .methods import EvictionMethod, RandomKeep

    return (suite_name.startswith("accuracy") and isinstance(method, EvictionMethod)
            and not isinstance(method, RandomKeep) and method.compression_ratio > 0)


def _is_reference(method) -> bool:
    from .methods.full import Full

    return isinstance(method, Full)


def timing_suspect(verdict: Verdict, measured: Measured) -> bool:
    """Whether a verdict fails on timings alone: then the timing is measured again before the test
    fails (a busy runner slows one measurement; a real regression slows both)."""
    bad = [r for r in verdict.rows if r.status in jd.FAILING]
    return bool(verdict.fail) and bool(bad) and all(r.metric in (measured.perf or {}) for r in bad)


def check_negatives(session):
    """The negative-sample gate (``--kvcheck-negatives``), on the controller after every accuracy
    test: judge this run's negative set against the stored one, queue writes per the update mode and
    add a row to the table. Returns the :class:`~kvcheck.negatives.Verdict` (None: nothing to judge)."""
    from . import negatives as neg

    scores = session.sample_scores
    if not scores:
        return None
    methods = sorted(scores)
    t, rule = session.negative_threshold, "seed"
    if neg.REFERENCE not in scores or len(scores) < 2:
        return neg.Verdict("skipped", [], [], "negative-sample gate skipped: it needs full and at least one "
                           f"compressed method in the accuracy suite; this run has {methods}")
    key = session.key(neg.SUITE, neg.FILE_ID)
    path = session.store.path(key)
    try:
        stored = session.store.load(key)
    except BaselineError as exc:
        return neg.Verdict("regressed", [], [], f"kvcheck: {exc}")
    datasets = neg.negatives(scores, t, rule)
    verdict = neg.judge(stored, methods, datasets, t, rule, scores, " ".join(sorted(session.score_paths)) or "TESTS")
    count = len(neg.all_negatives(datasets))
    before = None if stored is None else stored["metrics"]["negative_count"]["value"]
    session.rows.append(Row("(every compressed method)", "accuracy", "negative_samples", before, count,
                               None if before is None else count - before, 0.0, "lower",
                               verdict.status if verdict.status != "skipped" else "ok").as_dict())
    header = {"model": session.model_name, "tier": session.tier.name, "dtype": session.dtype_name,
              "suite": neg.SUITE, "methods": methods, "threshold": t, "rule": rule}
    doc = neg.document(header, datasets, provenance(session))
    if stored is None:
        session.store.stage(path, doc)
        if session.update not in ("new", "all"):
            return neg.Verdict("new", verdict.added, [], f"kvcheck: no negative-sample baseline; written to {path}: "
                               f"{count} negatives. Review it and commit it.")
    elif session.update == "all" and verdict.status in ("regressed", "improved"):
        session.store.stage(path, doc)
        return neg.Verdict("ok", [], [], f"negative-sample baseline rewritten ({count} negatives): {path}")
    return verdict
