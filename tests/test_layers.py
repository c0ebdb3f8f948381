"""Dependencies run one way. Every kvcheck module sits in a layer; a module imports only from its
own layer or lower ones, and no import runs round. Function-level imports count as much as
module-level ones (the AST of every module is read; nothing is imported)."""
from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "kvcheck"

# lowest first; a module is placed by the longest prefix listed
LAYERS = [
    ["errors", "defaults", "io", "tables", "tiers", "progress", "gpus"],
    ["judge"],
    ["store", "baseline"],
    ["layer_api", "quant", "work",  # work: the op counter and its regions, entered by the cache
     "formats", "formats_fp4", "formats_turboquant"],  # the engines' element formats: pure, below the methods
    ["methods", "build"],
    ["cache", "attention", "adapters"],
    ["tasks", "metrics", "negatives"],  # prompts in, scores out: pure, below the engine that runs them
    ["model", "machine", "engine", "bench", "tiny_model"],
    ["strategies", "scenarios", "oracles", "oracles_variable", "exercised"],
    ["suites", "runner"],
    ["gate"],
    ["plugin", "declare", "summary", "cli", "commands", "report", "__init__", "__main__"],
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PKG).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" and len(parts) > 1 else parts)


def layer_of(mod: str) -> int:
    best, found = -1, None
    for i, names in enumerate(LAYERS):
        for n in names:
            if (mod == n or mod.startswith(n + ".")) and len(n) > best:
                best, found = len(n), i
    assert found is not None, f"kvcheck.{mod} has no layer in tests/test_layers.py: add it"
    return found


def imports(path: Path, mod: str) -> set[str]:
    """kvcheck modules that ``path`` imports, anywhere in the file, as names relative to the package."""
    is_pkg = path.name == "__init__.py"
    package = mod.split(".") if is_pkg else mod.split(".")[:-1]
    if mod == "__init__":
        package = []
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - (node.level - 1)] if node.level > 1 else package
                target = ".".join(base + ([node.module] if node.module else []))
            elif node.module and (node.module == "kvcheck" or node.module.startswith("kvcheck.")):
                target = node.module[len("kvcheck."):] if node.module != "kvcheck" else ""
            else:
                continue
            names = [f"{target}.{a.name}" if target else a.name for a in node.names]
            for full in names:  # `from . import judge` imports the module kvcheck.judge
                out.add(full if (PKG / Path(*full.split("."))).with_suffix(".py").exists()
                        or (PKG / Path(*full.split("."))).is_dir() else target or "__init__")
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("kvcheck."):
                    out.add(a.name[len("kvcheck."):])
                elif a.name == "kvcheck":
                    out.add("__init__")
    out.discard(mod)
    return out


def graph() -> dict[str, set[str]]:
    g = {}
    for path in sorted(PKG.rglob("*.py")):
        if "templates" in path.relative_to(PKG).parts:  # files kvcheck init writes, not modules
            continue
        mod = "__init__" if path == PKG / "__init__.py" else module_name(path)
        g[mod] = {m for m in imports(path, mod) if m}
    return g


def test_every_import_runs_down():
    up = sorted(f"kvcheck.{a} (layer {layer_of(a)}) imports kvcheck.{b} (layer {layer_of(b)})"
                for a, deps in graph().items() for b in deps if layer_of(b) > layer_of(a))
    assert not up, "imports that run up:\n" + "\n".join(up)


def test_no_import_runs_round():
    g = graph()
    index, low, stack, on, cycles = {}, {}, [], set(), []

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
            if w not in g:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    assert not cycles, "imports that run round: " + "; ".join(" <-> ".join(c) for c in cycles)
