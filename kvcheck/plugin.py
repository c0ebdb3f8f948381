"""kvcheck's whole pytest surface: options and ini keys, fixtures, markers, the report header and
the summary table. State lives in one :class:`KvcheckSession` per process; baseline writes are held
until the session ends; comparison rows travel from xdist workers in ``user_properties``."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from .errors import KvcheckError
from .store import BaselineKey, BaselineStore

UPDATE_MODES = ("new", "all", "perf")
_KEY = pytest.StashKey["KvcheckSession"]()


def pytest_addoption(parser):
    g = parser.getgroup("kvcheck", "KV-cache compression gates")
    g.addoption("--kvcheck-model", help="local Hugging Face model folder (default: embedded SmolLM2-135M-Instruct)")
    g.addoption("--kvcheck-methods", help="declared methods to run: factory or method names, specs like snapkv:r=0.5, "
                                          "or exact ids, comma-separated")
    g.addoption("--kvcheck-tier", help="smoke | ci | full: how many samples and lengths (default ci)")
    g.addoption("--kvcheck-update", nargs="?", const="all", choices=UPDATE_MODES,
                help="write baselines: new (missing only), all (rewrite what ran, perf kept), perf (this machine's perf)")
    g.addoption("--kvcheck-baseline-dir", help="where baselines live (default: baselines/ under the rootdir)")
    g.addoption("--kvcheck-report", help="write every comparison row to this JSON file")
    g.addoption("--kvcheck-device", help="cpu, cuda, cuda:N or auto (default auto)")
    g.addoption("--kvcheck-dtype", help="float32, bfloat16, float16 or auto (default: fp32 on CPU, bf16 on CUDA)")
    g.addoption("--kvcheck-devices", help="with -n N: 'auto' or a list like 0,1,2 pins each xdist worker to a GPU")
    g.addoption("--kvcheck-task", action="append",
                help="also gate accuracy on this task, with its own baselines: longbench:PATH or ruler:PATH (local "
                     "JSONL) or a synthetic task, each optionally @LENGTHxN; repeat for several")
    g.addoption("--kvcheck-nightly", action="store_true", default=None,
                help="run every declared setting, the ones declared nightly=[...] too (default: the pre-merge selection)")
    g.addoption("--kvcheck-negatives", action="store_true", default=None,
                help="also gate the accuracy suite's negative samples (full right, every compressed method wrong)")
    for name, help_text in [("kvcheck_model", "model folder"), ("kvcheck_methods", "methods to run"),
                            ("kvcheck_tier", "smoke | ci | full"), ("kvcheck_baseline_dir", "baseline dir"),
                            ("kvcheck_device", "device"), ("kvcheck_dtype", "dtype")]:
        parser.addini(name, help_text)
    parser.addini("kvcheck_nightly", "run the nightly selection (see --kvcheck-nightly)", type="bool", default=False)
    parser.addini("kvcheck_negatives", "gate negative samples too (see --kvcheck-negatives)", type="bool",
                  default=False)
    parser.addini("kvcheck_negative_threshold", "t of the negative-sample rule: every method ≤ (1 − t) × full",
                  default="0.1")
    parser.addini("kvcheck_task", "accuracy tasks besides the tier's, one per line (as --kvcheck-task)",
                  type="linelist")
    parser.addini("kvcheck_cpu_threads", "torch threads per process on CPU (default 1: the same results under "
                  "any -n; the committed baselines were recorded with 1)", default="1")
    parser.addini("kvcheck_noise_runs", "perturbed runs per recorded baseline for its noise floor (default: the "
                  "suite's, 2; 0 records without a noise floor)", default="")
    parser.addini("kvcheck_layout", "batch composition of the gated runs: 0 (default) the tier's batches; N ≥ 1 "
                  "a benign perturbation (see kvcheck.runner.layout), to check that the gates hold", default="0")
    parser.addini("kvcheck_strict_perf", "fail (not skip) when no perf baseline exists for this machine",
                  type="bool", default=False)


def _opt(config, name):
    value = config.getoption(f"--{name.replace('_', '-')}")
    return value if value not in (None, "") else (config.getini(name) or None)


class KvcheckSession:
    """One per pytest process. Built at configure from options alone (no torch, so a project that
    runs no kvcheck test pays nothing); :meth:`resolve` picks the device and dtype and pins threads
    when the first kvcheck test is collected (or a property below is first read)."""

    def __init__(self, config):
        from .defaults import DEFAULT_MODEL
        from .tiers import TIERS

        self.config = config
        tier = _opt(config, "kvcheck_tier") or "ci"
        if tier not in TIERS:
            raise pytest.UsageError(f"kvcheck: unknown tier {tier!r}; use one of {', '.join(TIERS)}.")
        self.tier = TIERS[tier]
        self.update = config.getoption("--kvcheck-update")
        self.model_path = _opt(config, "kvcheck_model")
        self.model_name = DEFAULT_MODEL if not self.model_path else Path(self.model_path).name
        methods = _opt(config, "kvcheck_methods")
        self.select = methods or None  # method specs (kvcheck.methods.spec): names, name:key=value, ids
        self.nightly = bool(config.getoption("--kvcheck-nightly") or config.getini("kvcheck_nightly"))
        root = _opt(config, "kvcheck_baseline_dir") or "baselines"
        self.baseline_dir = Path(root) if os.path.isabs(root) else Path(config.rootpath) / root
        self.store = BaselineStore(self.baseline_dir)
        self.report_path = config.getoption("--kvcheck-report")
        self.strict_perf = bool(config.getini("kvcheck_strict_perf"))
        self.gate_negatives = bool(config.getoption("--kvcheck-negatives") or config.getini("kvcheck_negatives"))
        try:
            from .metrics.samples import check_threshold

            self.negative_threshold = check_threshold(float(config.getini("kvcheck_negative_threshold")))
        except (ValueError, KvcheckError) as exc:
            raise pytest.UsageError(f"kvcheck: ini kvcheck_negative_threshold: {exc}") from None
        self.sample_scores: dict[str, dict[str, float]] = {}  # accuracy: method id -> {sample id: score}
        self.negatives_verdict = None
        if config.getoption("--kvcheck-devices") and config.getoption("--kvcheck-device"):
            raise pytest.UsageError("kvcheck: --kvcheck-device and --kvcheck-devices both pick the device; pass one.")
        self.cpu_threads = _threads(config.getini("kvcheck_cpu_threads"))
        self.layout = _whole(config.getini("kvcheck_layout"), "kvcheck_layout", 0)
        runs = config.getini("kvcheck_noise_runs")
        self.noise_runs = None if runs in ("", None) else _whole(runs, "kvcheck_noise_runs", 0)
        try:
            from .tasks.spec import extra_set, parse_task_spec, tier_set

            extra = config.getoption("--kvcheck-task") or config.getini("kvcheck_task")
            self.task_sets = [tier_set(self.tier)] + [extra_set(parse_task_spec(t)) for t in extra]
        except KvcheckError as exc:
            raise pytest.UsageError(f"kvcheck: {exc}") from None
        if self.update and not _writable(self.baseline_dir):
            raise pytest.UsageError(f"kvcheck: baseline dir {self.baseline_dir} is not writable, but "
                                    f"--kvcheck-update={self.update} must write there; fix its permissions "
                                    "or pass --kvcheck-baseline-dir.")
        report = Path(self.report_path or ".").absolute()
        if self.report_path and (report.is_dir() or not _writable(report.parent)):
            raise pytest.UsageError(f"kvcheck: --kvcheck-report {self.report_path} cannot be written; pass a file path "
                                    "in a writable folder.")
        self.rows: list[dict] = []
        self.test_paths: set[str] = set()  # the test files that produced rows (for the accept hint)
        self.score_paths: set[str] = set()  # those that fed the negative-sample gate
        self._device = self._lm = self._runner = None

    def resolve(self) -> None:
        """Pick the device and dtype (a bad choice is a usage error) and pin torch's CPU threads."""
        if self._device is not None:
            return
        from .model import pick_device, pick_dtype

        try:
            device = pick_device(_worker_device(self.config) or _opt(self.config, "kvcheck_device"))
            self.dtype = pick_dtype(_opt(self.config, "kvcheck_dtype"), device)
        except KvcheckError as exc:
            raise pytest.UsageError(f"kvcheck: {exc}") from None
        self._device = device
        self.dtype_name = str(self.dtype).replace("torch.", "")
        if device.type == "cpu":
            import torch

            torch.set_num_threads(self.cpu_threads)

    @property
    def device(self):
        self.resolve()
        return self._device

    def __getattr__(self, name):
        if name in ("dtype", "dtype_name"):  # set by resolve()
            self.resolve()
            return self.__dict__[name]
        raise AttributeError(name)

    @property
    def machine_key(self) -> str:
        from .machine import machine_key

        return machine_key(self.device, self.dtype_name)

    @property
    def software_key(self) -> str:
        from .machine import software_key

        return software_key(self.device, self.dtype_name)

    @property
    def device_name(self) -> str:
        from .machine import device_name

        return device_name(self.device)

    @property
    def lm(self):
        if self._lm is None:
            from .model import load_model

            self._lm = load_model(self.model_path, str(self.device), self.dtype_name)
        return self._lm

    @property
    def runner(self):
        if self._runner is None:
            from .runner import Runner

            self._runner = Runner(self.lm, self.tier)
        return self._runner

    def key(self, suite: str, method_id: str) -> BaselineKey:
        return BaselineKey(self.model_name, self.tier.name, self.dtype_name, suite, method_id)

    def record(self, request, rows) -> None:
        request.node.user_properties.append(("kvcheck_rows", [r.as_dict() for r in rows]))

    def record_scores(self, request, method_id: str, scores: dict) -> None:
        """Per-sample scores of the accuracy suite, for the negative-sample gate."""
        if self.gate_negatives:
            request.node.user_properties.append(("kvcheck_scores", {"method": method_id, "scores": scores}))

    def flush(self) -> list[str]:
        return self.store.flush()

    def progress(self, message: str) -> None:
        """A line of progress on long work (recording noise floors), shown with ``-v`` where there is
        a terminal (not in xdist workers, whose output pytest does not stream)."""
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None and self.config.getoption("verbose", 0) > 0:
            reporter.write_line(f"kvcheck: {message}")


def _writable(folder: Path) -> bool:
    """Whether ``folder`` can be written or created: its first existing ancestor is a writable dir."""
    p = folder
    while not p.exists():
        p = p.parent
    return p.is_dir() and os.access(p, os.W_OK)


def _worker_device(config) -> str | None:
    """With --kvcheck-devices and xdist, worker gwN takes the N-th listed GPU (round robin)."""
    spec = config.getoption("--kvcheck-devices")
    worker = getattr(config, "workerinput", {}).get("workerid")
    if not spec or not worker:
        return None
    import torch

    if spec == "auto":
        ids = list(range(torch.cuda.device_count()))
    else:
        try:
            ids = [int(x) for x in spec.split(",") if x.strip()]
        except ValueError:
            raise pytest.UsageError(f"kvcheck: --kvcheck-devices takes 'auto' or GPU indices like 0,1; got {spec!r}.")
    if not ids:
        raise pytest.UsageError("kvcheck: --kvcheck-devices found no CUDA device; drop the option on CPU machines.")
    return f"cuda:{ids[int(worker[2:]) % len(ids)]}"


def _whole(value, name: str, least: int) -> int:
    try:
        n = int(value)
        if n < least:
            raise ValueError
    except (TypeError, ValueError):
        raise pytest.UsageError(f"kvcheck: ini {name} must be a whole number >= {least}, got {value!r}.") from None
    return n


def _threads(value) -> int:
    """torch's CPU threads per process (ini ``kvcheck_cpu_threads``). fp32 reductions split across
    threads add up in another order, so a method whose generation sits near a tie (int4 length drift
    did) gives other outputs with 1 thread than with 2: pinning makes a baseline hold under any ``-n``
    (each xdist worker one thread: ``-n auto`` uses every core)."""
    return _whole(value, "kvcheck_cpu_threads", 1)


def session_of(config) -> KvcheckSession:
    return config.stash[_KEY]


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a CUDA device (skipped without one)")
    config.addinivalue_line("markers", "slow: long-running; part of the full tier")
    config.stash[_KEY] = KvcheckSession(config)
    config.pluginmanager.register(_RowCollector(config.stash[_KEY]), "kvcheck-rows")


def pytest_report_header(config):
    s = session_of(config)
    device = _opt(config, "kvcheck_device") or ("per worker" if config.getoption("--kvcheck-devices") else "auto")
    return (f"kvcheck: model={s.model_name} device={device} dtype={_opt(config, 'kvcheck_dtype') or 'auto'} "
            f"tier={s.tier.name} selection={'nightly' if s.nightly else 'pre-merge'} baselines={s.baseline_dir} "
            f"update={s.update or 'off'}")


def pytest_generate_tests(metafunc):
    if "kv_method" not in metafunc.fixturenames:
        return
    from .declare import declared_methods

    s = session_of(metafunc.config)
    try:
        methods = declared_methods(s.select, nightly=s.nightly)
    except KvcheckError as exc:
        if hasattr(metafunc.config, "workerinput"):  # xdist reports a worker's collection error
            raise pytest.UsageError(f"kvcheck: {exc}") from None
        s.usage_error, methods = f"kvcheck: {exc}", []  # a usage error once collected (here: a traceback)
    metafunc.parametrize("kv_method", [pytest.param(m, id=m.id) for _, m in methods])
    if "kv_tasks" in metafunc.fixturenames and len(s.task_sets) > 1:  # --kvcheck-task given
        metafunc.parametrize("kv_tasks", [pytest.param(t, id="tier" if t.suite == "accuracy" else t.specs[0].label)
                                          for t in s.task_sets])


KVCHECK_FIXTURES = frozenset({"kv_method", "kv_gate", "kvcheck", "kv_lm", "kvcheck_session"})


def pytest_collection_modifyitems(config, items):
    s = session_of(config)
    error = getattr(s, "usage_error", None)
    if error:
        raise pytest.UsageError(error)
    if any(KVCHECK_FIXTURES & set(getattr(item, "fixturenames", ())) for item in items):
        s.resolve()  # torch, the device and the dtype: only when a kvcheck test will run


def seed_apart(item) -> None:
    """Each declared method draws its own examples. Hypothesis derandomises (the ci profile) by the test
    function, which every method shares, so the test's name with the method's id joins the function's
    digest, as hypothesis does itself for tests with ``@pytest.mark.parametrize`` (the same examples for
    the same method and test wherever the suite lives)."""
    callspec = getattr(item, "callspec", None)
    inner = getattr(getattr(getattr(item, "obj", None), "hypothesis", None), "inner_test", None)
    if callspec is not None and "kv_method" in callspec.params and inner is not None:
        inner._hypothesis_internal_add_digest = item.name.encode()


def pytest_runtest_setup(item):
    seed_apart(item)
    if item.get_closest_marker("gpu"):
        import torch

        if not torch.cuda.is_available():
            pytest.skip("gpu test: no CUDA device here (its CPU twin runs the same code path)")


@pytest.fixture(scope="session")
def kvcheck_session(request) -> KvcheckSession:
    return session_of(request.config)


@pytest.fixture(scope="session")
def kv_tasks(kvcheck_session):
    """The accuracy suite's tasks: the tier's (each --kvcheck-task parametrises this with its own set)."""
    return kvcheck_session.task_sets[0]


@pytest.fixture(scope="session")
def kv_lm(kvcheck_session):
    """The model under test, loaded once per process."""
    try:
        return kvcheck_session.lm
    except KvcheckError as exc:
        pytest.exit(f"kvcheck: {exc}", returncode=4)


@pytest.fixture
def kv_gate(kvcheck_session, request):
    """The gate: ``kv_gate.run(FIDELITY, kv_method)`` measures a suite and judges it against the baseline."""
    from .gate import Gate

    return Gate(kvcheck_session, request)


@pytest.fixture
def kvcheck(kv_gate):
    """The older name of :func:`kv_gate`."""
    return kv_gate


class _RowCollector:
    """Collects comparison rows from test reports (on the xdist controller, from every worker)."""

    def __init__(self, session: KvcheckSession):
        self.session = session

    def pytest_runtest_logreport(self, report):
        if report.when == "call":
            rows = [r for name, value in report.user_properties if name == "kvcheck_rows" for r in value]
            if rows:
                self.session.rows.extend(rows)
                self.session.test_paths.add(report.nodeid.split("::")[0])
            for name, value in report.user_properties:
                if name == "kvcheck_scores":
                    self.session.sample_scores.setdefault(value["method"], {}).update(value["scores"])
                    self.session.score_paths.add(report.nodeid.split("::")[0])


def pytest_sessionfinish(session, exitstatus):
    s = session.config.stash.get(_KEY, None)
    if s is None:
        return
    if s.gate_negatives and not hasattr(session.config, "workerinput"):
        from .gate import check_negatives

        s.negatives_verdict = check_negatives(s)
        if s.negatives_verdict is not None and s.negatives_verdict.status in ("regressed", "new") \
                and s.update not in ("new", "all"):
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
    for err in s.flush():
        session.config.get_terminal_writer().line(err, red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    if s.report_path and not hasattr(session.config, "workerinput"):
        from .io import write_json_atomic

        write_json_atomic(s.report_path, {"kind": "kvcheck-report", "model": s.model_name, "tier": s.tier.name,
                                          "machine": s.machine_key, "paths": sorted(s.test_paths), "rows": s.rows})


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    """A property's exercised counts (:mod:`kvcheck.exercised`) go into its report, from every worker."""
    from . import exercised

    exercised.last = None
    yield
    if exercised.last:
        item.user_properties.append((exercised.PROPERTY, exercised.last))
        exercised.last = None


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    s = session_of(config)
    if not hasattr(config, "workerinput"):
        from .exercised import summary_lines

        reports = [r for key in ("passed", "failed") for r in terminalreporter.stats.get(key, ())
                   if getattr(r, "when", "") == "call"]
        lines = summary_lines(reports)
        if lines:
            terminalreporter.section("kvcheck: examples that exercised each property's rule")
            for line in lines:
                terminalreporter.line(line)
    if hasattr(config, "workerinput") or not s.rows:
        return
    from .judge import status_order
    from .summary import render

    terminalreporter.section("kvcheck")
    rows = sorted(s.rows, key=lambda r: (status_order(r["status"]), r["method"], r["suite"], r["metric"]))
    for line in render(rows, paths=sorted(s.test_paths)):
        terminalreporter.line(line)
    v = s.negatives_verdict
    if v is not None:
        terminalreporter.line(v.message, red=v.status in ("regressed", "new"), green=v.status in ("ok", "improved"))
