"""``kvcheck init`` and the path a new user takes: scaffold an empty repository, declare a method of
their own, record baselines, pass, and see a planted regression in that method fail."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from kvcheck.cli import main
from kvcheck.commands.init import SUITES, planned

ROOT = Path(__file__).resolve().parents[1]


def tree(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): p.read_text() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_init_writes_the_suites_a_conftest_and_a_workflow(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["init"]) == 0
    files = tree(tmp_path)
    assert sorted(files) == sorted([".github/workflows/kvcheck.yml", "tests/kvcheck/conftest.py"] +
                                   [f"tests/kvcheck/test_{m}.py" for m in SUITES])
    assert "from kvcheck.suites.fidelity import test_fidelity  # noqa: F401" in files["tests/kvcheck/test_fidelity.py"]
    assert "def full():" in files["tests/kvcheck/conftest.py"]
    assert "python -m pytest tests/kvcheck -n auto" in files[".github/workflows/kvcheck.yml"]
    assert "wrote tests/kvcheck/conftest.py" in capsys.readouterr().out
    assert main(["init", "--check"]) == 0


def test_init_never_overwrites_without_force(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    main(["init", "--dir", "kv", "--ci", "none"])
    (tmp_path / "kv/conftest.py").write_text("# my methods\n")
    capsys.readouterr()
    assert main(["init", "--dir", "kv", "--ci", "none"]) == 2
    err = capsys.readouterr().err
    assert "would overwrite kv/conftest.py" in err and "--force" in err
    assert (tmp_path / "kv/conftest.py").read_text() == "# my methods\n"
    assert main(["init", "--dir", "kv", "--ci", "none", "--force"]) == 0
    assert "def full():" in (tmp_path / "kv/conftest.py").read_text()


def test_init_check_names_what_is_stale(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    main(["init", "--dir", "kv", "--ci", "none"])
    (tmp_path / "kv/test_accuracy.py").write_text("def test_nothing(): pass\n")
    (tmp_path / "kv/test_throughput.py").unlink()
    (tmp_path / "kv/conftest.py").write_text("import kvcheck\n")
    capsys.readouterr()
    assert main(["init", "--dir", "kv", "--ci", "none", "--check"]) == 1
    out = capsys.readouterr().out
    assert "kv/test_accuracy.py: differs" in out and "kv/test_throughput.py: missing" in out
    assert "kv/conftest.py: does not import kvcheck's fixtures" in out


@pytest.mark.parametrize("args, message", [
    (["--dir", "/abs"], "must be a folder inside this repository"),
    (["--dir", "../up"], "must be a folder inside this repository"),
    (["--ci", "none", "--gpu"], "--gpu adds a GitHub workflow"),
])
def test_init_bad_input(tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.chdir(tmp_path)
    assert main(["init", *args]) == 2
    assert message in capsys.readouterr().err and list(tmp_path.iterdir()) == []


def test_init_gpu_workflow_names_the_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    main(["init", "--dir", "gates", "--gpu"])
    assert "pytest gates -n \"$NGPU\" --kvcheck-devices auto" in (tmp_path / ".github/workflows/kvcheck-gpu.yml").read_text()


def test_this_repository_runs_what_init_writes(monkeypatch):
    """suites/ is exactly `kvcheck init --dir suites --ci none` (its conftest.py too)."""
    monkeypatch.chdir(ROOT)
    assert main(["init", "--dir", "suites", "--ci", "none", "--check"]) == 0
    for path, text in planned("suites", "none", False).items():
        assert (ROOT / path).read_text() == text, f"{path} is not what kvcheck init writes"


MY_METHOD = '''

from dataclasses import dataclass

from kvcheck.methods import EvictionMethod, register


@register
@dataclass(frozen=True)
class LowNorm(EvictionMethod):
    """Keeps the keys of smallest norm."""
    name = "low_norm"

    def score(self, inputs):
        return -inputs.keys.norm(dim=-1)


@kvcheck.method(params=[0.5], ids=lambda r: f"r{r}")
def low_norm(ratio):
    return LowNorm(compression_ratio=ratio)
'''


def test_a_new_user_repository(pytester):
    """kvcheck installed, an empty folder: `kvcheck init`, a method of the team's own in the generated
    conftest.py, `pytest --kvcheck-update=new`, then `pytest` passes; the method's scores negated
    (it now keeps the largest keys) fails with the usual message, naming the user's own test file."""
    r = subprocess.run([sys.executable, "-m", "kvcheck", "init"], cwd=pytester.path, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    conftest = pytester.path / "tests/kvcheck/conftest.py"
    conftest.write_text(conftest.read_text() + MY_METHOD)
    smoke = ("--kvcheck-tier", "smoke", "-p", "no:cacheprovider", "-o", "kvcheck_noise_runs=1")  # one perturbed run

    first = pytester.runpytest_subprocess("--kvcheck-update=new", *smoke)
    assert first.ret == 0, first.stdout.str()
    stored = sorted(p.relative_to(pytester.path).as_posix() for p in (pytester.path / "baselines").rglob("*.json"))
    drift = json.loads(next((pytester.path / "baselines").rglob("drift/low_norm-r0.5.json")).read_text())
    assert all("noise" in m for m in drift["metrics"].values()) and all("stable" in s for s in drift["samples"].values())
    assert "baselines/smollm2-135m-instruct/smoke-float32/fidelity/low_norm-r0.5.json" in stored
    assert len(stored) == 2 * 4  # full and low_norm in each of the four gate suites

    again = pytester.runpytest_subprocess(*smoke)
    assert again.ret == 0, again.stdout.str()
    assert "kvcheck:" in again.stdout.str() and "regressed" not in again.stdout.str()

    conftest.write_text(conftest.read_text().replace("return -inputs.keys.norm(dim=-1)",
                                                     "return inputs.keys.norm(dim=-1)"))
    planted = pytester.runpytest_subprocess(*smoke)
    out = planted.stdout.str()
    assert planted.ret == 1, out
    assert "kvcheck: low_norm-r0.5 regressed in fidelity on" in out and "kl_divergence" in out
    assert "accept it with: pytest tests/kvcheck/test_fidelity.py -k 'low_norm-r0.5' --kvcheck-update=all" in out
