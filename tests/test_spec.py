"""The one method grammar: parsing, printing, building, selection over declared methods, and the
round trip printed form → spec → method with the same id, for every declared and registered method."""
from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvcheck import declare
from kvcheck.errors import KvcheckError
from kvcheck.methods import REGISTRY, SnapKV
from kvcheck.methods.spec import MethodSpec, parse_list

ROOT = Path(__file__).resolve().parents[1]


def root_declarations() -> dict:
    """The registry the repository's root conftest fills (loaded here under its own module name)."""
    before = dict(declare.DECLARED)
    declare.DECLARED.clear()
    try:
        spec = importlib.util.spec_from_file_location("kvcheck_root_conftest", ROOT / "conftest.py")
        spec.loader.exec_module(importlib.util.module_from_spec(spec))
        return dict(declare.DECLARED)
    finally:
        declare.DECLARED.clear()
        declare.DECLARED.update(before)


DECLARED = root_declarations()
DECLARED_METHODS = [(d.name, m) for d in DECLARED.values() for m in d.build()]


@pytest.fixture
def root_declared(monkeypatch):
    monkeypatch.setattr(declare, "DECLARED", dict(DECLARED))


def test_the_root_conftest_declares_every_shipped_method():
    assert len(DECLARED_METHODS) == 44  # 21 + the 2026 catalogue: 12 engine formats, 11 kvpress settings
    assert {m.name for _, m in DECLARED_METHODS} == set(REGISTRY)


@pytest.mark.parametrize("method", [m for _, m in DECLARED_METHODS], ids=lambda m: m.id)
def test_printed_form_rebuilds_the_same_id(method):
    assert MethodSpec.parse(str(MethodSpec.of(method))).build().id == method.id
    assert MethodSpec.parse(MethodSpec.of(method).short()).build().id == method.id


def test_parse_and_print():
    spec = MethodSpec.parse(" snapkv : r=0.5, w=16 ")
    assert spec == MethodSpec("snapkv", (("r", "0.5"), ("w", "16")))
    assert str(spec) == "snapkv:r=0.5,w=16" and spec.short() == "snapkv:r=0.5,w=16"
    assert MethodSpec.parse("snapkv:compression_ratio=0.5").short() == "snapkv:r=0.5"
    assert str(MethodSpec.parse("full")) == "full"
    assert MethodSpec.parse("snapkv:r=0.25,w=8,p=max").build() == SnapKV(0.25, window=8, pooling="max")


def test_parse_list():
    assert [str(s) for s in parse_list("full,snapkv:r=0.5,w=16,kivi")] == ["full", "snapkv:r=0.5,w=16", "kivi"]
    assert [str(s) for s in parse_list("full,snapkv")] == ["full", "snapkv"]  # README examples still parse
    assert [str(s) for s in parse_list(["kivi:b=4;fp8", "int:bits=8,g=64"])] == ["kivi:b=4", "fp8",
                                                                                "int:bits=8,g=64"]
    assert parse_list("") == [] and parse_list([" , "]) == []


@pytest.mark.parametrize("text,message", [
    ("snapkvv", ["unknown method 'snapkvv'", "known methods:", "snapkv"]),
    ("snapkv:windw=3", ["has no parameter 'windw'", "it takes: compression_ratio (r), window (w)"]),
    ("snapkv:window", ["write name:key=value,key=value"]),
    ("snapkv:w=abc", ["snapkv.window expects a number (an integer), got 'abc'"]),
    ("snapkv:r=half", ["snapkv.compression_ratio expects a number, got 'half'"]),
    ("snapkv:r=0.5,compression_ratio=0.6", ["compression_ratio twice"]),
    ("snapkv:r=2", ["compression_ratio must be a number in [0, 1)"]),
    (":r=2", ["has no method name"]),
])
def test_errors_say_what_to_write(text, message):
    with pytest.raises(KvcheckError) as info:
        MethodSpec.parse(text).build()
    for m in message:
        assert m in str(info.value)


def test_continuation_without_a_method():
    with pytest.raises(KvcheckError, match="has no method before it"):
        parse_list("w=16,snapkv")


def test_optional_fields_take_none():
    from kvcheck.adapters.hf_quantized import HFQuantized
    from kvcheck.methods.spec import resolve

    assert resolve(HFQuantized, {"b": "4", "g": "none"}) == {"nbits": 4, "q_group_size": None}


# ---- selection over declared methods (--kvcheck-methods) ------------------------------------------

@pytest.mark.parametrize("select,expected", [
    ("snapkv:r=0.5,full", ["full", "snapkv-r0.5-w16-k5-pavg"]),
    ("full,snapkv", ["full", "snapkv-r0.5-w16-k5-pavg", "snapkv-r0.75-w16-k5-pavg"]),
    ("int_quant", ["int-b8-g32-res0", "int-b4-g32-res0"]),  # factory name
    ("int", ["int-b8-g32-res0", "int-b4-g32-res0"]),  # method name
    ("kivi:b=4", ["kivi-b4-g128-res32"]),
    ("h2o-r0.75-rec32", ["h2o-r0.75-rec32"]),  # exact id
    (["snapkv:r=0.75", "w=16", "fp8:res=64"], ["snapkv-r0.75-w16-k5-pavg", "fp8-res64"]),  # the plugin's split
])
def test_selection(root_declared, select, expected):
    assert [m.id for _, m in declare.declared_methods(select)] == expected


def test_selection_errors(root_declared):
    with pytest.raises(KvcheckError, match="--kvcheck-methods names nosuch, which no @kvcheck.method declares"):
        declare.declared_methods("nosuch")
    with pytest.raises(KvcheckError, match="matches no declared method; declared of that name: "
                                           "snapkv-r0.5-w16-k5-pavg, snapkv-r0.75"):
        declare.declared_methods("snapkv:r=0.3")
    with pytest.raises(KvcheckError, match="has no parameter 'x'"):
        declare.declared_methods("snapkv:x=1")


def test_pre_merge_selection_runs_each_method_once_and_names_win(root_declared):
    """Without --kvcheck-nightly, the settings declared nightly-only stay out; every declared factory
    still runs once (a family such as engine_format by its first member), and a method named in
    --kvcheck-methods runs whatever the selection."""
    pre = [m.id for _, m in declare.declared_methods(nightly=False)]
    every = [m.id for _, m in declare.declared_methods()]
    assert len(every) == 44 and len(pre) == 13 and set(pre) < set(every)
    assert ({name for name, _ in declare.declared_methods(nightly=False)}
            == {name for name, _ in declare.declared_methods()})
    assert "knorm-r0.5" in pre and "knorm-r0.75" not in pre and "int-b4-g32-res0" in pre
    assert [m.id for _, m in declare.declared_methods("knorm", nightly=False)] == ["knorm-r0.5", "knorm-r0.75"]


def test_nightly_params_must_be_declared_params():
    with pytest.raises(KvcheckError, match=r"\[0.3\] not among params=\[0.5, 0.75\]"):
        declare.method(params=[0.5, 0.75], nightly=[0.3])
    with pytest.raises(KvcheckError, match="every setting is nightly"):
        declare.method(params=[0.5], nightly=[0.5])


def test_the_nightly_option_selects_every_setting(pytester, monkeypatch):
    monkeypatch.setattr(declare, "DECLARED", {})  # the inner conftest declares its own methods
    pytester.makeconftest(
        "import kvcheck\nfrom kvcheck.methods import Full, KNorm\n\n"
        "@kvcheck.method()\ndef full():\n    return Full()\n\n"
        "@kvcheck.method(params=[0.5, 0.75], nightly=[0.75])\ndef knorm(r):\n    return KNorm(compression_ratio=r)\n")
    pytester.makepyfile("def test_m(kv_method):\n    assert kv_method.id\n")
    pre = pytester.runpytest_inprocess("--co", "-q", "-p", "no:cacheprovider")
    assert "test_m[knorm-r0.5]" in pre.stdout.str() and "knorm-r0.75" not in pre.stdout.str()
    night = pytester.runpytest_inprocess("--co", "-q", "-p", "no:cacheprovider", "--kvcheck-nightly")
    assert "test_m[knorm-r0.75]" in night.stdout.str()
    assert "selection=pre-merge" in pytester.runpytest_inprocess("--co", "-p", "no:cacheprovider").stdout.str()


@pytest.mark.parametrize("module", ["declare.py", "methods/spec.py"])
def test_module_level_imports_stay_light(module):
    """declare.py and spec.py import the method registry (and so torch) only inside functions."""
    import ast

    tree = ast.parse((ROOT / "kvcheck" / module).read_text())
    names = [(n.module or "") if isinstance(n, ast.ImportFrom) else a.name
             for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))
             for a in (n.names if isinstance(n, ast.Import) else [None])]
    assert not [n for n in names if "torch" in n or "methods" in n or n in ("", ".")], names


# ---- property-style round trips over the registry ---------------------------------------------------

def _values(field, hint):
    if field.name == "compression_ratio":
        return st.floats(0, 0.99, allow_nan=False)
    if hint is str:
        return st.just(field.default)
    return st.sampled_from(sorted({field.default, *REGISTRY_GOOD.get(field.name, ())}))


REGISTRY_GOOD = {"bits": (2, 4, 8), "group_size": (16, 32, 64, 128), "residual": (0, 32, 128), "window": (1, 16, 64),
                 "kernel": (1, 3, 5), "sinks": (0, 4, 16), "recent": (0, 8, 32), "seed": (0, 1, 7), "beta": (1, 20)}


@st.composite
def methods(draw):
    import typing

    cls = REGISTRY[draw(st.sampled_from(sorted(REGISTRY)))]
    hints = typing.get_type_hints(cls)
    kwargs = {f.name: draw(_values(f, hints[f.name])) for f in dataclasses.fields(cls)}
    try:
        return cls(**kwargs)
    except KvcheckError:  # a combination the method refuses (e.g. kivi bits=8)
        return cls()


@settings(max_examples=150, deadline=None)
@given(methods())
def test_round_trip_over_the_registry(method):
    spec = MethodSpec.of(method)
    assert MethodSpec.parse(str(spec)) == spec
    assert spec.build() == method and spec.build().id == method.id
    assert MethodSpec.parse(spec.short()).build().id == method.id
    assert spec.matches(method) and MethodSpec.parse(method.id).matches(method)
    assert MethodSpec(method.name).matches(method)
    assert [str(s) for s in parse_list(f"full,{spec},{spec.short()}")] == ["full", str(spec), spec.short()]
