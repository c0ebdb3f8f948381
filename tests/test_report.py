"""``kvcheck report`` on small hand-made inputs of every kind: the page, its four plots, the PNGs,
the data shaping behind them, and bad input."""
from __future__ import annotations

import base64
import json
import random
import re
import sys

import pytest

pytest.importorskip("matplotlib")

from kvcheck import report as rp  # noqa: E402
from kvcheck.cli import main  # noqa: E402

MODEL, TIER, DTYPE = "SmolLM2-135M-Instruct", "ci", "float32"
TASKS = (("passkey", 512), ("passkey", 1024), ("kv_retrieval", 512))
EVICTION = ["snapkv-r0.5-w16-k5-pavg", "snapkv-r0.75-w16-k5-pavg", "streaming_llm-r0.5-s4", "streaming_llm-r0.75-s4"]
QUANT = ["kivi-b2-g32-res32", "kivi-b4-g32-res32"]
METHODS = ["full", *EVICTION, *QUANT]
# a method's chance of keeping a sample right, and how much longer its open-ended answers run
SKILL = {"full": 0.95, "snapkv-r0.5-w16-k5-pavg": 0.9, "snapkv-r0.75-w16-k5-pavg": 0.7,
         "streaming_llm-r0.5-s4": 0.5, "streaming_llm-r0.75-s4": 0.2, "kivi-b2-g32-res32": 0.85,
         "kivi-b4-g32-res32": 0.95}
LONGER = {"full": 0, "snapkv-r0.5-w16-k5-pavg": 5, "snapkv-r0.75-w16-k5-pavg": 20, "streaming_llm-r0.5-s4": 30,
          "streaming_llm-r0.75-s4": 60, "kivi-b2-g32-res32": 10, "kivi-b4-g32-res32": 1}
KV = {"full": 1.0, "kivi-b2-g32-res32": 0.2, "kivi-b4-g32-res32": 0.33}


def kv_ratio(m: str) -> float:
    r = rp.ratio(m)
    return KV[m] if r is None else 1 - r


def sample_ids(task: str, length: int, n: int = 8) -> list[str]:
    return [f"{task}-L{length}-s0-{i:03d}" for i in range(n)]


def correctness(seed: int = 0) -> dict[str, dict[str, bool]]:
    rng = random.Random(seed)
    ids = [i for t, n in TASKS for i in sample_ids(t, n)]
    full = {i: rng.random() < SKILL["full"] for i in ids}
    out = {"full": full}
    for m in METHODS[1:]:
        out[m] = {i: (full[i] and rng.random() < SKILL[m]) or (not full[i] and rng.random() < 0.3) for i in ids}
    return out


def make_report(path, regress: str | None = "streaming_llm-r0.75-s4") -> None:
    right = correctness()
    rows = []
    for m in METHODS:
        for t, n in TASKS:
            ids = sample_ids(t, n)
            now = sum(right[m][i] for i in ids) / len(ids)
            base = now if m != regress else min(1.0, now + 0.375)
            status = "regressed" if base - now > 0.125 else "ok"
            rows.append({"method": m, "suite": "accuracy", "metric": f"{t}-L{n}.accuracy", "baseline": base, "now": now,
                         "delta": now - base, "tolerance": 0.125, "direction": "higher", "status": status})
        rows.append({"method": m, "suite": "accuracy", "metric": "samples.right_to_wrong", "baseline": 0,
                     "now": 3 if m == regress else 0, "delta": 0, "tolerance": 1, "direction": "lower",
                     "status": "regressed" if m == regress else "ok"})
        rows.append({"method": m, "suite": "drift", "metric": "median_diff_pct", "baseline": -LONGER[m],
                     "now": -LONGER[m], "delta": 0.0, "tolerance": 10.0, "direction": "higher", "status": "ok"})
        for b, n in ((1, 512), (4, 256)):
            tag = f"b{b}-L{n}"
            kv = kv_ratio(m)
            pre = 1.0 if m == "full" else (1.15 if "kivi" in m else 1.05)
            dec = 1.0 if m == "full" else (1.4 if "kivi" in m else 0.6 + 0.35 * kv)
            for metric, value in (("prefill_ratio", pre), ("decode_ratio", dec), ("kv_ratio", kv),
                                  ("compress_share", 0.0 if m == "full" else 0.04)):
                rows.append({"method": m, "suite": "throughput", "metric": f"{tag}.{metric}", "baseline": value,
                             "now": value, "delta": 0.0, "tolerance": 0.25, "direction": "lower", "status": "ok"})
    rows.append({"method": "snapkv-r0.5-w16-k5-pavg", "suite": "fidelity", "metric": "kl_divergence", "baseline": 0.02,
                 "now": None, "delta": None, "tolerance": 0.002, "direction": "lower", "status": "missing"})
    path.write_text(json.dumps({"kind": "kvcheck-report", "model": MODEL, "tier": TIER,
                                "machine": "cpu|torch2.5|float32", "rows": rows}))


def make_eval(path, task="passkey", length=2048, methods=("full", "snapkv-r0.5-w16-k5-pavg", "kivi-b2-g32-res32")):
    rng = random.Random(7)
    rows, records = [], {}
    full_len = {i: rng.randint(6, 12) for i in sample_ids(task, length, 12)}
    for m in methods:
        recs = []
        for i in sample_ids(task, length, 12):
            score = 1.0 if rng.random() < SKILL.get(m, 0.8) else 0.0
            longer = 0 if m == "full" else rng.randint(-1, 4)
            recs.append({"id": i, "score": score, "output_tokens": full_len[i] + longer, "prompt_tokens": length,
                         "kv_ratio": kv_ratio(m)})
        records[m] = recs
        rows.append({"method": m, "accuracy": sum(r["score"] for r in recs) / len(recs), "mean_output_tokens": 8.0,
                     "kv_ratio": kv_ratio(m), "prefill_tok_s": 1000.0, "decode_tok_s": 50.0})
    path.write_text(json.dumps({"kind": "kvcheck-eval", "model": MODEL, "task": task, "length": length, "rows": rows,
                                "records": records}))


def make_bench(path):
    points = []
    for m in METHODS[1:]:
        for b in (1, 8):
            for n in (1024, 4096):
                kv = kv_ratio(m)
                bound = (1.0 + b * n / 1024) / (1.0 + b * n / 1024 * kv)
                slack = 0.05 * b / 8 + (0.25 if "kivi" in m else 0.03 * len(m) % 0.1)
                points.append({"method": m, "batch": b, "length": n,
                               "prefill_ratio": 1.02 + 0.01 * b + (0.08 if "kivi" in m else 0.02 * len(m) % 0.05),
                               "decode_ratio": 1 / bound + slack, "kv_ratio": kv,
                               "decode_bound": bound, "decode_speedup": 1.0, "compress_share": 0.03})
    path.write_text(json.dumps({"kind": "kvcheck-bench", "model": MODEL, "machine": "cpu", "points": points}))


def make_baselines(root, seed: int = 1):
    rng = random.Random(seed)
    folder = root / MODEL / f"{TIER}-{DTYPE}"
    right = correctness(seed)
    for m in METHODS:
        key = {"model": MODEL, "tier": TIER, "dtype": DTYPE, "method": rp.family(m), "method_id": m, "params": {}}
        acc = {"schema": 1, "key": {**key, "suite": "accuracy"},
               "metrics": {f"{t}-L{n}.accuracy": {"value": 0.5, "tolerance": 0.125, "direction": "higher"}
                           for t, n in TASKS},
               "samples": {i: {"score": float(c), "correct": c, "length": 6} for i, c in right[m].items()}}
        diffs = {f"open-{k:03d}": round(0.0 if m == "full" else rng.gauss(-LONGER[m], 12 + LONGER[m] / 2), 3)
                 for k in range(16)}
        drift = {"schema": 1, "key": {**key, "suite": "drift"},
                 "metrics": {"median_diff_pct": {"value": 0.0, "tolerance": 10.0, "direction": "higher"}},
                 "samples": {i: {"score": d, "correct": d > -20, "length": 50} for i, d in diffs.items()}}
        for suite, data in (("accuracy", acc), ("drift", drift)):
            (folder / suite).mkdir(parents=True, exist_ok=True)
            (folder / suite / f"{m}.json").write_text(json.dumps(data))
    return root


@pytest.fixture
def inputs(tmp_path):
    make_report(tmp_path / "report.json")
    make_eval(tmp_path / "eval.json")
    make_bench(tmp_path / "bench.json")
    make_baselines(tmp_path / "baselines")
    return tmp_path


def cli_error(capsys, *argv) -> str:
    assert main(list(argv)) == 2
    err = capsys.readouterr().err
    assert err.startswith("kvcheck: error: ") and "Traceback" not in err
    return err


# --- the whole page --------------------------------------------------------------------------------


def test_report_writes_page_with_four_plots_and_pngs(inputs, capsys):
    out = inputs / "out"
    argv = ["report", str(inputs / "report.json"), str(inputs / "eval.json"), str(inputs / "bench.json"),
            "--baselines", str(inputs / "baselines"), "--out", str(out), "--quiet"]
    assert main(argv) == 0
    cap = capsys.readouterr()
    bad = sum(r["status"] in ("regressed", "missing") for r in json.loads((inputs / "report.json").read_text())["rows"])
    assert bad >= 2 and "index.html" in cap.out and f"{bad} regressions" in cap.out
    page = (out / "index.html").read_text(encoding="utf-8")
    for name in rp.PLOTS:
        assert f"<section id='{name}'>" in page
        png = (out / rp.PNG_NAMES[name]).read_bytes()
        assert png.startswith(b"\x89PNG") and png[25] == 3  # IHDR colour type 3: a 256-colour palette
        assert base64.b64encode(png).decode() in page  # the very PNG is embedded
    assert len(re.findall(r"src='data:image/png;base64,", page)) == 4
    assert "<section id='regressions'>" in page
    regressed = page.split("<details>")[0]
    assert "streaming_llm-r0.75-s4" in regressed and "REGRESSED" in regressed and "MISSING" in regressed
    assert "snapkv-r0.75-w16-k5-pavg" not in regressed  # ok rows only in the full table
    assert "http" not in page.replace("http-equiv", "")  # self-contained: nothing fetched


def test_report_from_one_file_notes_missing_plots_and_removes_stale_pngs(inputs, capsys):
    out = inputs / "out"
    assert main(["report", str(inputs / "bench.json"), "--out", str(out), "--quiet"]) == 0
    stale = out / rp.PNG_NAMES["flips"]
    stale.write_bytes(b"old")
    assert main(["report", str(inputs / "bench.json"), "--out", str(out), "--quiet"]) == 0
    assert capsys.readouterr().err == ""  # --quiet: no progress bar
    page = (out / "index.html").read_text(encoding="utf-8")
    assert (out / rp.PNG_NAMES["throughput"]).exists() and not stale.exists()
    assert page.count("data:image/png;base64,") == 1
    assert rp.EMPTY["flips"] in page and "No comparison rows" in page


def test_progress_bar_on_stderr_unless_quiet(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    doc = {"kind": "kvcheck-bench", "points": [{"method": "snapkv-r0.5", "batch": 1, "length": 64,
                                                "prefill_ratio": 1.0, "decode_ratio": 0.8}]}
    (tmp_path / "b.json").write_text(json.dumps(doc))
    assert main(["report", str(tmp_path / "b.json"), "--out", str(tmp_path / "o")]) == 0
    assert "kvcheck report" in capsys.readouterr().err  # --quiet runs elsewhere leave stderr empty



@pytest.mark.parametrize("ci, shown", [("1", False), ("true", False), ("0", True), ("false", True)])
def test_progress_bar_silent_in_ci_logs(ci, shown, monkeypatch, capsys):
    from kvcheck.progress import bar
    monkeypatch.setenv("CI", ci)  # stderr is captured, not a terminal, as in a CI log
    with bar(2, "kvcheck bench", unit="point") as pb:
        pb.update(2)
    err = capsys.readouterr().err
    assert ("kvcheck bench" in err) is shown and ("point" in err) is shown

# --- data shaping ------------------------------------------------------------------------------------


def test_method_id_parsing():
    assert rp.family("streaming_llm-r0.75-s4") == "streaming_llm"
    assert rp.ratio("snapkv-r0.5-w16-k5-pavg") == 0.5 and rp.ratio("kivi-b2-g64-res32") is None
    assert rp.ratio("full") is None and rp.method_kind("full") == "full"
    assert rp.config_key("snapkv-r0.5-w16-k5-pavg") == "snapkv-w16-k5-pavg"
    assert rp.nominal_kv_ratio("kivi-b2-g64-res32") == 2 / 16 and rp.nominal_kv_ratio("fp8-res0") == 0.5
    assert rp.nominal_kv_ratio("tova-r0.5") is None
    ids = ["kivi-b2-g64-res32", "snapkv-r0.75", "full", "snapkv-r0.5", "h2o-r0.5-rec32"]
    assert sorted(ids, key=rp.method_order) == ["full", "h2o-r0.5-rec32", "snapkv-r0.5", "snapkv-r0.75",
                                                "kivi-b2-g64-res32"]
    st = rp.styles(ids + ["mypress-r0.5"])
    assert st["snapkv-r0.5"]["colour"] == st["snapkv-r0.75"]["colour"] == rp.FAMILY_COLOURS["snapkv"]
    assert st["snapkv-r0.5"]["linestyle"] != st["snapkv-r0.75"]["linestyle"]
    assert st["mypress-r0.5"]["colour"] not in rp.FAMILY_COLOURS.values()


def test_accuracy_x_measured_kv_ratio_or_nominal(inputs):
    data = rp.accuracy_data(rp.load_inputs([str(inputs / "report.json")]))
    assert set(data["tasks"]) == {"passkey-L512", "passkey-L1024", "kv_retrieval-L512"}
    assert data["x"]["snapkv-r0.75-w16-k5-pavg"] == (0.75, "id")
    assert data["x"]["kivi-b2-g32-res32"] == (pytest.approx(0.8), "measured kv_ratio")
    assert data["tasks"]["passkey-L512"]["streaming_llm-r0.75-s4"]["regressed"] is True
    doc = {"kind": "kvcheck-eval", "task": "passkey", "length": 256,
           "rows": [{"method": "fp8-res0", "accuracy": 1.0}, {"method": "mypress", "accuracy": 0.5}], "records": {}}
    (inputs / "e.json").write_text(json.dumps(doc))
    data = rp.accuracy_data(rp.load_inputs([str(inputs / "e.json")]))
    assert data["x"]["fp8-res0"] == (0.5, "nominal bits/16") and "mypress" not in data["x"]
    assert any("mypress" in n for n in data["notes"])


def test_drift_from_baselines_and_eval_lengths(inputs):
    data = rp.drift_data(rp.load_inputs([str(inputs / "report.json"), str(inputs / "eval.json")]))
    assert data["medians"]["streaming_llm-r0.75-s4"] == -60 and "full" not in data["medians"]
    doc = {"kind": "kvcheck-eval", "task": "t", "length": 8, "rows": [],
           "records": {"full": [{"id": 1, "output_tokens": 10}, {"id": 2, "output_tokens": 0}],
                       "m-r0.5": [{"id": 1, "output_tokens": 13}, {"id": 2, "output_tokens": 4}]}}
    (inputs / "e.json").write_text(json.dumps(doc))
    inp = rp.load_inputs([str(inputs / "e.json")])
    rp.load_baselines(inp, inputs / "baselines")
    data = rp.drift_data(inp)
    # id 2: full's output is empty, so it has no diff%
    assert data["sources"]["kvcheck eval records (t-L8)"] == {"m-r0.5": [pytest.approx(-30.0)]}
    stored = data["sources"]["drift suite (stored baselines, open-ended prompts)"]
    assert "full" not in stored and len(stored["streaming_llm-r0.75-s4"]) == 16


def test_flip_codes_against_full(tmp_path):
    doc = {"kind": "kvcheck-eval", "task": "t", "length": 8, "rows": [],
           "records": {"full": [{"id": "t-a-1", "score": 1.0}, {"id": "t-a-2", "score": 0.0},
                                {"id": "t-a-3", "score": 1.0}, {"id": "t-a-10", "score": 0.0}],
                       "x-r0.5": [{"id": "t-a-1", "score": 0.0}, {"id": "t-a-2", "score": 1.0},
                                  {"id": "t-a-3", "score": 0.6}]}}
    (tmp_path / "e.json").write_text(json.dumps(doc))
    data = rp.flip_data(rp.load_inputs([str(tmp_path / "e.json")]))
    assert data["samples"] == ["t-a-1", "t-a-2", "t-a-3", "t-a-10"]  # numeric order within a task
    assert data["cells"] == [[rp.LOST, rp.GAINED, rp.BOTH_RIGHT, rp.NO_DATA]]
    assert data["counts"] == {"x-r0.5": (1, 1)} and data["reference"]


def test_throughput_merges_report_and_bench(inputs):
    data = rp.throughput_data(rp.load_inputs([str(inputs / "report.json"), str(inputs / "bench.json")]))
    assert data["points"] == [(1, 512), (1, 1024), (1, 4096), (4, 256), (8, 1024), (8, 4096)]
    assert "full" not in data["methods"]
    assert set(data["methods"]["kivi-b2-g32-res32"][(8, 4096)]) >= {"prefill_ratio", "decode_ratio", "decode_bound"}


def test_throughput_panels_only_where_measured(inputs):
    """A CPU ci run measures kv_ratio at one grid point: no empty prefill/decode panels, bars instead of lines."""
    rows = [{"method": m, "suite": "throughput", "metric": "b1-L512.kv_ratio", "baseline": kv_ratio(m), "now": kv_ratio(m),
             "delta": 0.0, "tolerance": 0.005, "direction": "lower", "status": "ok"} for m in METHODS]
    (inputs / "kv.json").write_text(json.dumps({"kind": "kvcheck-report", "rows": rows}))
    data = rp.throughput_data(rp.load_inputs([str(inputs / "kv.json")]))
    assert data["points"] == [(1, 512)] and [n for n, _ in rp.throughput_panels(data)] == ["kv_ratio"]
    assert rp.plot_throughput(data).startswith(b"\x89PNG")
    data = rp.throughput_data(rp.load_inputs([str(inputs / "bench.json")]))
    assert [n for n, _ in rp.throughput_panels(data)] == ["prefill_ratio", "decode_ratio", "kv_ratio"]
    assert rp.plot_throughput({"points": [], "methods": {}}) is None


def test_baselines_folder_with_several_tiers_picks_the_reports(inputs, capsys):
    other = inputs / "baselines" / MODEL / "full-float32" / "drift"
    other.mkdir(parents=True)
    (other / "x.json").write_text((inputs / "baselines" / MODEL / "ci-float32" / "drift" / "full.json").read_text())
    inp = rp.load_inputs([str(inputs / "report.json")])
    rp.load_baselines(inp, inputs / "baselines")
    assert inp.baselines_dir.endswith("ci-float32")
    err = cli_error(capsys, "report", str(inputs / "bench.json"), "--baselines", str(inputs / "baselines"),
                    "--out", str(inputs / "o"))
    assert "several model/tier folders" in err


# --- bad input ----------------------------------------------------------------------------------------


def test_no_files(capsys, tmp_path):
    err = cli_error(capsys, "report", "--out", str(tmp_path / "o"))
    assert "no input files" in err and "kvcheck eval --json" in err


def test_missing_file(capsys, tmp_path):
    assert "does not exist" in cli_error(capsys, "report", str(tmp_path / "nope.json"), "--out", str(tmp_path / "o"))
    assert not (tmp_path / "o").exists()


def test_malformed_json(capsys, tmp_path):
    (tmp_path / "bad.json").write_text('{"kind": "kvcheck-report", "rows": [')
    assert "is not valid JSON" in cli_error(capsys, "report", str(tmp_path / "bad.json"), "--out", str(tmp_path / "o"))


@pytest.mark.parametrize("doc, expect", [
    ({"kind": "kvcheck-samples"}, "kind 'kvcheck-samples'"),
    ([1, 2], "no 'kind' field"),
    ({"rows": []}, "no 'kind' field"),
])
def test_unknown_kind(capsys, tmp_path, doc, expect):
    (tmp_path / "x.json").write_text(json.dumps(doc))
    err = cli_error(capsys, "report", str(tmp_path / "x.json"), "--out", str(tmp_path / "o"))
    assert expect in err and "kvcheck-report" in err and "kvcheck bench --json" in err


@pytest.mark.parametrize("doc, expect", [
    ({"kind": "kvcheck-report", "rows": {}}, "'rows' must be a list"),
    ({"kind": "kvcheck-report", "rows": [{"method": "m", "suite": "s", "metric": "x", "status": "ok", "now": "1"}]},
     "row 0"),
    ({"kind": "kvcheck-eval", "task": "t", "rows": []}, "numeric 'length'"),
    ({"kind": "kvcheck-eval", "task": "t", "length": 8, "rows": [], "records": {"m": [{"score": 1}]}}, "record 0"),
    ({"kind": "kvcheck-bench", "points": [{"method": "m", "batch": 1}]}, "point 0"),
])
def test_malformed_documents(capsys, tmp_path, doc, expect):
    (tmp_path / "x.json").write_text(json.dumps(doc))
    err = cli_error(capsys, "report", str(tmp_path / "x.json"), "--out", str(tmp_path / "o"))
    assert expect in err and "regenerate it with" in err


def test_bad_baselines_and_out(capsys, inputs):
    bench = str(inputs / "bench.json")
    assert "is not a folder" in cli_error(capsys, "report", bench, "--baselines", str(inputs / "nope"),
                                          "--out", str(inputs / "o"))
    (inputs / "empty").mkdir()
    assert "no accuracy/ or drift/ baseline files" in cli_error(capsys, "report", bench, "--baselines",
                                                                str(inputs / "empty"), "--out", str(inputs / "o"))
    broken = inputs / "baselines" / MODEL / "ci-float32" / "drift" / "full.json"
    broken.write_text("{")
    assert "is not valid JSON" in cli_error(capsys, "report", bench, "--baselines", str(inputs / "baselines"),
                                            "--out", str(inputs / "o"))
    (inputs / "afile").write_text("")
    assert "is a file" in cli_error(capsys, "report", bench, "--out", str(inputs / "afile"))


def test_missing_matplotlib_says_what_to_install(capsys, inputs, monkeypatch):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    err = cli_error(capsys, "report", str(inputs / "bench.json"), "--out", str(inputs / "o"))
    assert "pip install matplotlib" in err


# ---- structured rows (method_name, params) and the id-parsing fallback for older files -------------

def _acc_row(method_id: str, **extra) -> dict:
    return {"method": method_id, "suite": "accuracy", "metric": "passkey-L512.accuracy", "baseline": 0.5,
            "now": 0.75, "delta": 0.25, "tolerance": 0.125, "direction": "higher", "status": "improved", **extra}


def test_structured_rows_are_read_not_parsed(tmp_path):
    """A method whose id states no ratio part: its row's params place it; without them, the id is parsed."""
    rows = [_acc_row("mypress-v2", method_name="mypress", params={"compression_ratio": 0.25, "window": 16}),
            _acc_row("myquant-x", method_name="myquant", params={"bits": 4}),
            _acc_row("full", method_name="full", params={})]
    path = tmp_path / "new.json"
    path.write_text(json.dumps({"kind": "kvcheck-report", "model": MODEL, "tier": TIER, "rows": rows}))
    inputs = rp.load_inputs([path])
    ref = inputs.ref("mypress-v2")
    assert ref == rp.MethodRef("mypress-v2", "mypress", {"compression_ratio": 0.25, "window": 16})
    assert rp.method_kind(ref) == "eviction" and rp.config_key(ref) == "mypress:window=16"
    data = rp.accuracy_data(inputs)
    assert data["x"]["mypress-v2"] == (0.25, "id") and data["x"]["myquant-x"] == (0.75, "nominal bits/16")
    assert data["refs"]["mypress-v2"] == ref
    assert rp.plot_accuracy(data)

    old = tmp_path / "old.json"  # the same rows as an older kvcheck wrote them
    old.write_text(json.dumps({"kind": "kvcheck-report", "model": MODEL, "tier": TIER,
                               "rows": [{k: v for k, v in r.items() if k not in ("method_name", "params")}
                                        for r in rows]}))
    legacy_inputs = rp.load_inputs([old])
    assert legacy_inputs.refs == {} and legacy_inputs.ref("mypress-v2") == "mypress-v2"
    legacy_data = rp.accuracy_data(legacy_inputs)
    assert "mypress-v2" not in legacy_data["x"] and any("mypress-v2" in n for n in legacy_data["notes"])


@pytest.mark.parametrize("method_id,name,params", [
    ("snapkv-r0.5-w16-k5-pavg", "snapkv", {"compression_ratio": 0.5, "window": 16, "kernel": 5, "pooling": "avg"}),
    ("kivi-b2-g64-res32", "kivi", {"bits": 2, "group_size": 64, "residual": 32}),
    ("fp8-res64", "fp8", {"residual": 64}),
    ("full", "full", {}),
])
def test_structured_and_legacy_agree_on_shipped_ids(method_id, name, params):
    ref = rp.MethodRef(method_id, name, params)
    for read in (rp.family, rp.ratio, rp.nominal_kv_ratio, rp.method_kind):
        assert read(ref) == read(method_id), read
    assert rp.method_order(ref)[:2] == rp.method_order(method_id)[:2]


def test_baseline_keys_with_params_are_structured(inputs):
    folder = inputs / "baselines" / MODEL / f"{TIER}-{DTYPE}" / "accuracy"
    doc = json.loads((folder / "full.json").read_text())
    loaded = rp.load_inputs([inputs / "report.json"])
    rp.load_baselines(loaded, inputs / "baselines")
    assert loaded.ref("full") == rp.MethodRef("full", "full", {})
    assert isinstance(loaded.ref(METHODS[1]), str) and doc["key"]["params"] == {}  # hand-made keys: parsed


def test_malformed_structured_row(capsys, tmp_path):
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"kind": "kvcheck-report", "rows": [_acc_row("x", params=[1])]}))
    err = cli_error(capsys, "report", str(path), "--out", str(tmp_path / "o"))
    assert "needs a string method_name and an object params" in err


def test_bench_predictions_are_shown_beside_the_measured_ratios(tmp_path):
    doc = {"kind": "kvcheck-bench", "points": [{"method": "kivi-b2-g64-res32", "batch": 1, "length": 512,
                                                "prefill_ratio": 1.1, "decode_ratio": 0.9, "kv_ratio": 0.21,
                                                "decode_bound": 1.04}],
           "work": [{"method": "kivi-b2-g64-res32", "batch": 1, "length": 512, "work": {},
                     "predicted": {"H100 SXM": {"prefill": 2.25, "decode": 1.2}, "L4": {"prefill": 1.7, "decode": 1.19}}}]}
    (tmp_path / "b.json").write_text(json.dumps(doc))
    assert main(["report", str(tmp_path / "b.json"), "--out", str(tmp_path / "o"), "--quiet"]) == 0
    page = (tmp_path / "o" / "index.html").read_text()
    assert "Predicted on GPUs" in page and "H100 SXM" in page and "2.25/1.20" in page and "1.70/1.19" in page
    doc["work"] = [{"method": "m"}]
    (tmp_path / "b.json").write_text(json.dumps(doc))
    assert main(["report", str(tmp_path / "b.json"), "--out", str(tmp_path / "o2"), "--quiet"]) == 2
