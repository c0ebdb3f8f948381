"""``kvcheck init``: write kvcheck's suites into your repository.

Writes, under ``--dir`` (default ``tests/kvcheck``):

- ``conftest.py``: the ``full`` reference, kvcheck's fixtures, and a commented template for your own
  method (yours to edit);
- one thin ``test_<suite>.py`` per shipped suite, importing its tests from ``kvcheck.suites`` (not
  to be edited: ``kvcheck init --check`` says whether they are current);

and, with ``--ci github`` (the default), ``.github/workflows/kvcheck.yml`` (CPU), plus
``kvcheck-gpu.yml`` with ``--gpu``. An existing file is never overwritten without ``--force``.
"""
from __future__ import annotations

import ast
import importlib.resources
import importlib.util
from pathlib import Path

from ..errors import KvcheckError
from ..io import write_bytes_atomic

SUITES = ("fidelity", "accuracy", "length_drift", "throughput", "properties", "properties_codec",
          "properties_model")
FIXTURES_LINE = "from kvcheck.suites.fixtures import *"


def add_arguments(p) -> None:
    p.add_argument("--dir", default="tests/kvcheck", help="where the suites and conftest.py go (default tests/kvcheck)")
    p.add_argument("--ci", choices=("github", "none"), default="github",
                   help="write a CI workflow: github (.github/workflows/kvcheck.yml, the default) or none")
    p.add_argument("--gpu", action="store_true", help="also write a self-hosted GPU workflow (kvcheck-gpu.yml)")
    p.add_argument("--force", action="store_true", help="overwrite files that exist")
    p.add_argument("--check", action="store_true",
                   help="write nothing; exit 1 unless every suite file is what this kvcheck writes")


def suite_tests(module: str) -> list[str]:
    """The test functions a shipped suite module defines, and its ``pytestmark`` (marks that apply
    to the whole module must be imported too), read from its source: nothing is imported."""
    spec = importlib.util.find_spec(f"kvcheck.suites.{module}")
    if spec is None or spec.origin is None:
        raise KvcheckError(f"kvcheck.suites.{module} is missing from this installation; reinstall kvcheck.")
    tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
    marks = [t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets
             if isinstance(t, ast.Name) and t.id == "pytestmark"]
    return marks + [n.name for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")]


def suite_file(module: str) -> str:
    names = ", ".join(suite_tests(module)) + "  # noqa: F401"
    if len(names) > 70:
        names = "(  # noqa: F401\n" + "".join(f"    {n},\n" for n in suite_tests(module)) + ")"
    title = module.replace("_", " ")
    return (f'"""kvcheck\'s {title} suite, over the methods declared in conftest.py.\n\n'
            f"Written by `kvcheck init`; do not edit. The tests live in the kvcheck package\n"
            f'(kvcheck.suites.{module}); `kvcheck init --check` says whether this file is current."""\n'
            f"from kvcheck.suites.{module} import {names}\n")


def _template(name: str) -> str:
    return importlib.resources.files("kvcheck").joinpath("templates", name).read_text(encoding="utf-8")


def planned(folder: str, ci: str, gpu: bool) -> dict[Path, str]:
    """Every file ``kvcheck init`` writes, path → content."""
    d = Path(folder)
    files = {d / "conftest.py": _template("conftest.py")}
    files.update({d / f"test_{m}.py": suite_file(m) for m in SUITES})
    shown = d.as_posix()
    if ci == "github":
        files[Path(".github/workflows/kvcheck.yml")] = _template("github-cpu.yml").replace("{dir}", shown)
        if gpu:
            files[Path(".github/workflows/kvcheck-gpu.yml")] = _template("github-gpu.yml").replace("{dir}", shown)
    elif gpu:
        raise KvcheckError("--gpu adds a GitHub workflow; drop --ci none or drop --gpu.")
    return files


def check(files: dict[Path, str]) -> list[str]:
    """What is not current: missing or changed suite files, a conftest.py without kvcheck's fixtures.
    Workflows and the rest of conftest.py are yours to adapt, so only their presence is checked."""
    problems = []
    for path, text in files.items():
        if not path.exists():
            problems.append(f"{path}: missing")
        elif path.name == "conftest.py":
            if FIXTURES_LINE not in path.read_text(encoding="utf-8"):
                problems.append(f"{path}: does not import kvcheck's fixtures ({FIXTURES_LINE})")
        elif path.name.startswith("test_") and path.read_text(encoding="utf-8") != text:
            problems.append(f"{path}: differs from what this kvcheck writes (rerun kvcheck init --force)")
    return problems


def run(args) -> int:
    if Path(args.dir).is_absolute() or ".." in Path(args.dir).parts:
        raise KvcheckError(f"--dir {args.dir!r} must be a folder inside this repository, e.g. tests/kvcheck.")
    files = planned(args.dir, args.ci, args.gpu)
    if args.check:
        problems = check(files)
        for p in problems:
            print(f"kvcheck init --check: {p}")
        if not problems:
            print(f"kvcheck init --check: {len(files)} files current")
        return 1 if problems else 0
    clash = [p for p in files if p.exists() and (p.is_dir() or not args.force)]
    if clash:
        raise KvcheckError("would overwrite " + ", ".join(map(str, clash)) +
                           "; pass --force to overwrite them (your conftest.py's method declarations too), or "
                           "pick another folder with --dir.")
    for path, text in files.items():
        write_bytes_atomic(path, text.encode("utf-8"))
        print(f"wrote {path}")
    print(f"\nnext:\n  1. declare your method in {Path(args.dir) / 'conftest.py'} (see the template there)\n"
          f"  2. python -m pytest {args.dir} --kvcheck-update=new   # records baselines/ (minutes on a CPU)\n"
          f"  3. review and commit baselines/; then python -m pytest {args.dir} gates every change")
    return 0
