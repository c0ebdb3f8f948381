"""Nothing kvcheck reads can run code or write outside where it should.

- Baselines are JSON only: no pickle anywhere in kvcheck, a pickled "baseline" is refused without
  being unpickled, non-JSON values (NaN, tensors) are never written, and every committed baseline is
  strict JSON.
- Models load from safetensors (or the embedded GGUF) only, and code shipped inside a model folder
  never runs: ``trust_remote_code`` is off everywhere, and the CLI and the plugin have no way to turn
  it on (only the ``load_model(..., trust_remote_code=True)`` API argument does).
- Baseline paths never leave the baseline folder: method ids, suite, tier and model names with path
  separators or ``..`` are refused, as is a symlink inside the baseline folder that points out of it.
"""
from __future__ import annotations

import ast
import json
import pickle
from pathlib import Path

import pytest

from kvcheck import baseline as bl
from kvcheck import declare
from kvcheck.errors import KvcheckError
from kvcheck.model import load_model

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted((ROOT / "kvcheck").rglob("*.py"))

UNSAFE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve", "marshal"}
UNSAFE_CALLS = {("torch", "load"), ("numpy", "load"), ("np", "load"), ("yaml", "load"), ("yaml", "unsafe_load"),
                ("builtins", "eval"), ("builtins", "exec")}


def _calls(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name):
                yield (f.value.id, f.attr), node
            elif isinstance(f, ast.Name):
                yield ("builtins", f.id), node


def test_sources_are_found():
    assert len(SOURCES) > 20 and ROOT / "kvcheck" / "baseline.py" in SOURCES


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_pickle_no_eval_no_remote_code(path):
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            assert not {a.name.split(".")[0] for a in node.names} & UNSAFE_MODULES, ast.dump(node)
        elif isinstance(node, ast.ImportFrom):
            assert (node.module or "").split(".")[0] not in UNSAFE_MODULES, ast.dump(node)
    for (owner, name), node in _calls(tree):
        assert (owner, name) not in UNSAFE_CALLS, f"{path}:{node.lineno} calls {owner}.{name}"
        for kw in node.keywords:
            if kw.arg == "trust_remote_code":  # only load_model passes it on, as its own argument
                assert path.name == "model.py" and isinstance(kw.value, ast.Name) \
                    and kw.value.id == "trust_remote_code", f"{path}:{node.lineno}"
            if kw.arg in ("allow_pickle", "weights_only"):
                pytest.fail(f"{path}:{node.lineno} passes {kw.arg}")
            if kw.arg == "use_safetensors":
                assert isinstance(kw.value, ast.Constant) and kw.value.value is True, f"{path}:{node.lineno}"


def test_cli_and_plugin_never_enable_remote_code():
    """The callers of load_model pass no trust_remote_code (so it is False), and no option names it."""
    callers = [p for p in SOURCES if "load_model(" in p.read_text() and p.name != "model.py"]
    assert any(p.name == "plugin.py" for p in callers) and any(p.parent.name == "commands" for p in callers)
    for path in SOURCES:
        assert "trust-remote-code" not in path.read_text(), path  # no CLI or pytest option turns it on
    import inspect

    assert inspect.signature(load_model).parameters["trust_remote_code"].default is False


class Marker:
    """Unpickling this creates ``path``: proof that something unpickled it."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def test_a_pickled_baseline_is_refused_not_unpickled(tmp_path):
    marker = tmp_path / "unpickled"
    path = tmp_path / "full.json"
    path.write_bytes(pickle.dumps({"schema": 1, "key": {}, "metrics": {}, "payload": Marker(marker)}))
    with pytest.raises(bl.BaselineError, match="not valid JSON"):
        bl.load(path)
    assert not marker.exists()


def test_non_json_values_are_never_written(tmp_path):
    import torch

    path = tmp_path / "b.json"
    for bad in (torch.tensor(1.0), Marker(tmp_path / "x"), {1, 2}):
        with pytest.raises(TypeError):
            bl.save(path, {"schema": 1, "metrics": {"m": bad}})
    assert not path.exists() and list(tmp_path.iterdir()) == []


def test_committed_baselines_are_strict_json():
    files = sorted((ROOT / "baselines").rglob("*"))
    assert files
    for p in files:
        if p.is_file():
            assert p.suffix == ".json", p
            json.loads(p.read_text(encoding="utf-8"), parse_constant=lambda c: pytest.fail(f"{p}: {c}"))
            assert bl.load(p)["schema"] == bl.SCHEMA


def _remote_code_folder(folder: Path, marker: Path) -> Path:
    """A model folder whose config asks for its own Python code (which would create ``marker``)."""
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({
        "model_type": "evilmodel", "architectures": ["EvilModel"],
        "auto_map": {"AutoConfig": "configuration_evil.EvilConfig", "AutoModelForCausalLM": "modeling_evil.EvilModel",
                     "AutoTokenizer": ["tokenization_evil.EvilTokenizer", None]}}))
    code = f"open({str(marker)!r}, 'w').write('ran')\n"
    for name in ("configuration_evil.py", "modeling_evil.py", "tokenization_evil.py"):
        (folder / name).write_text(code)
    from safetensors.torch import save_file
    import torch

    save_file({"w": torch.zeros(1)}, str(folder / "model.safetensors"))
    return folder


def test_model_folder_code_never_runs(tmp_path):
    marker = tmp_path / "code-ran"
    folder = _remote_code_folder(tmp_path / "evil", marker)
    with pytest.raises(KvcheckError, match="custom code"):
        load_model(folder)
    assert not marker.exists()


def test_pickled_weights_are_never_loaded(tmp_path):
    marker = tmp_path / "unpickled"
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps(Marker(marker)))
    with pytest.raises(KvcheckError, match="no .safetensors weights"):
        load_model(folder)
    assert not marker.exists()


# ---- baseline paths --------------------------------------------------------------------------------

ESCAPES = ["../../etc/x", "../x", "..", ".", "a/b", "a\\b", "/etc/passwd", "", ".hidden", "x\x00y", "a..b",
           "x/../../y", "~root", "C:x"]


@pytest.mark.parametrize("part", ESCAPES, ids=repr)
@pytest.mark.parametrize("field", ["method_id", "suite", "model", "tier"])
def test_baseline_paths_never_escape(tmp_path, part, field):
    parts = {"model": "model", "tier": "ci", "suite": "fidelity", "method_id": "full"}
    parts[field] = part
    with pytest.raises(bl.BaselineError, match="cannot be used in a baseline path|escapes the baseline dir"):
        bl.baseline_path(tmp_path, parts["model"], parts["tier"], "float32", parts["suite"], parts["method_id"])


def test_a_symlink_out_of_the_baseline_dir_is_refused(tmp_path):
    root, outside = tmp_path / "baselines", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "model").symlink_to(outside, target_is_directory=True)
    with pytest.raises(bl.BaselineError, match="escapes the baseline dir"):
        bl.baseline_path(root, "model", "ci", "float32", "fidelity", "full")
    assert bl.baseline_path(root, "other", "ci", "float32", "fidelity", "full").parent.parent.parent == root / "other"


EVIL_CONFTEST = '''
from dataclasses import dataclass

import kvcheck
from kvcheck.methods import Full


@dataclass(frozen=True)
class Evil(Full):
    name = "../../escaped"


@kvcheck.method()
def evil():
    return Evil()
'''

GATE_TEST = '''
from kvcheck import baseline as bl
from kvcheck.judge import Measured


def test_gate(kv_method, kv_gate):
    kv_gate.check("store", kv_method, Measured(metrics={"m": bl.metric(0.5, 0.0, "equal")}))
'''


def test_a_method_id_with_path_separators_writes_nothing(pytester, monkeypatch):
    """A method whose id would climb out of the baseline folder fails its test with a clear message,
    even with --kvcheck-update=new, and nothing is written anywhere."""
    monkeypatch.setattr(declare, "DECLARED", {})
    pytester.makeconftest(EVIL_CONFTEST)
    pytester.makepyfile(test_store=GATE_TEST)
    around = pytester.path.parent
    before = sorted(p.name for p in around.iterdir())
    r = pytester.runpytest("--import-mode=importlib", "-p", "no:cacheprovider", "--kvcheck-update=new")
    r.assert_outcomes(failed=1)
    out = r.stdout.str()
    assert "'../../escaped.json' cannot be used in a baseline path" in out and "Traceback" not in out
    assert not (pytester.path / "baselines").exists()
    assert sorted(p.name for p in around.iterdir()) == before
    assert not list(around.parent.rglob("escaped*"))
