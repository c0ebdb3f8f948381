"""Every gate is shown to fail: each suite runs (in a subprocess, smoke tier) against a planted
regression and must fail with a message naming the metric (and the samples where samples are
involved), while unchanged methods in the same run pass. Also: missing and corrupt baselines,
update modes, and xdist."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

CONFTEST = '''
import os
import kvcheck
import kvcheck.engine as engine
from kvcheck.methods import Full, KIVI, RandomKeep, SnapKV, StreamingLLM, TOVA

PLANT = os.environ.get("KVCHECK_PLANT", "")


class NoSinks(StreamingLLM):
    """streaming_llm with its attention sinks dropped (same id: it is judged by the real baseline)."""
    def _rank(self, positions, first):
        return positions.float()


class WrongScale(KIVI):
    """kivi that dequantises with twice the stored scale."""
    def dequantize(self, packed, dtype):
        packed = type(packed)(packed.codes, packed.scale * 2, packed.zero, packed.bits, packed.axis,
                              packed.group_size, packed.shape, packed.lead_pad)
        return super().dequantize(packed, dtype)


class CoarseGrid(KIVI):
    """kivi whose value grid is 8 % coarser than its bits state; its packed tensor states the coarser
    step, so the bound the codec states for itself still holds."""
    def quantize_values(self, values, valid):
        import torch
        from kvcheck import quant
        q = super().quantize_values(values, valid)
        scale = (q.scale.float() * 1.08).to(q.scale.dtype)
        step, zero = quant.per_entry(scale, q), quant.per_entry(q.zero, q)
        codes = ((values.float() - zero) / step).round().clamp(0, (1 << q.bits) - 1).to(torch.uint8)
        return quant.QTensor(quant.pack(codes, q.bits), scale, q.zero, q.bits, q.axis, q.group_size, q.shape,
                             q.lead_pad)


class RandomScores(TOVA):
    """tova whose prefill scores are random's: it keeps what random keeps from the prompt (same id)."""
    def score(self, inputs):
        return RandomKeep(compression_ratio=self.compression_ratio).score(inputs)


class SlowScore(SnapKV):
    """snapkv whose scoring does three times the work."""
    def score(self, inputs):
        super().score(inputs)
        super().score(inputs)
        return super().score(inputs)


class NoDecodeEviction(StreamingLLM):
    """streaming_llm that claims no decode-time eviction: it stops evicting once it generates."""
    @property
    def capabilities(self):
        import dataclasses
        return dataclasses.replace(super().capabilities, evicts_on_decode=False)


if PLANT == "eos":  # a method under which the model never ends its answer
    _forward = engine.forward

    def forward(model, ids, positions, valid, cache, logits_to_keep=1):
        logits = _forward(model, ids, positions, valid, cache, logits_to_keep)
        if isinstance(cache.method, SnapKV):
            logits[..., 2] = float("-inf")
        return logits

    engine.forward = forward


if PLANT == "short":  # the engine ends every answer one token early, whatever the method
    _generate = engine.generate_batch

    def generate_batch(*args, **kwargs):
        recs = _generate(*args, **kwargs)
        for r in recs:
            r.output_ids, r.output_tokens = r.output_ids[:-1], max(0, r.output_tokens - 1)
        return recs

    engine.generate_batch = generate_batch


@kvcheck.method()
def full():
    return Full()


@kvcheck.method(params=[0.5])
def streaming_llm(r):
    cls = {"sinks": NoSinks, "grow": NoDecodeEviction}.get(PLANT, StreamingLLM)
    return cls(compression_ratio=r, sinks=4)


@kvcheck.method(params=[0.5])
def snapkv(r):
    return (SlowScore if PLANT == "slow" else SnapKV)(compression_ratio=r, window=16)


@kvcheck.method(params=[0.5])
def tova(r):
    return (RandomScores if PLANT == "random" else TOVA)(compression_ratio=r)


@kvcheck.method(params=[0.5])
def random(r):
    return RandomKeep(compression_ratio=r)


@kvcheck.method(params=[4])
def kivi(bits):
    cls = {"scale": WrongScale, "coarse": CoarseGrid}.get(PLANT, KIVI)
    return cls(bits=bits, group_size=32, residual=16)
'''


@pytest.fixture
def project(pytester):
    pytester.makeconftest(CONFTEST)
    shutil.copytree(ROOT / "suites", pytester.path / "suites")
    return pytester


def run(project, *args, plant=""):
    project._monkeypatch.setenv("KVCHECK_PLANT", plant)  # inherited by the subprocess
    return project.runpytest_subprocess("--kvcheck-tier", "smoke", "-p", "no:cacheprovider", "-p", "no:randomly",
                                        "-o", "kvcheck_noise_runs=0", *args)  # noise floors: test_init, test_judge


def baselines(project) -> dict[str, str]:
    root = project.path / "baselines"
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*.json"))}


def accept(project, suite: str, methods: str):
    r = run(project, f"suites/{suite}", "--kvcheck-methods", methods, "--kvcheck-update=new")
    assert r.ret == 0, r.stdout.str()


def test_dropped_sinks_fail_fidelity(project):
    accept(project, "test_fidelity.py", "full,streaming_llm")
    r = run(project, "suites/test_fidelity.py", "--kvcheck-methods", "full,streaming_llm", plant="sinks")
    out = r.stdout.str()
    r.assert_outcomes(passed=1, failed=1)
    assert "streaming_llm-r0.5-s4 regressed in fidelity on" in out and "kl_divergence" in out
    assert "REGRESSED" in out and "accept intended changes with" in out


def test_wrong_kivi_scale_fails_accuracy_naming_samples(project):
    accept(project, "test_accuracy.py", "full,kivi")
    r = run(project, "suites/test_accuracy.py", "--kvcheck-methods", "full,kivi", plant="scale")
    out = r.stdout.str()
    r.assert_outcomes(passed=1, failed=1)
    assert "kivi-b4-g32-res16 regressed in accuracy on" in out and "passkey-L256.accuracy" in out
    assert "samples right→wrong" in out and "passkey-L256-s0-" in out and "expected '" in out


def test_wrong_kivi_scale_fails_fidelity(project):
    accept(project, "test_fidelity.py", "full,kivi")
    r = run(project, "suites/test_fidelity.py", "--kvcheck-methods", "full,kivi", plant="scale")
    r.assert_outcomes(passed=1, failed=1)
    out = r.stdout.str()
    assert "kivi-b4-g32-res16 regressed in fidelity on" in out
    assert "attn_rel_error" in out and "kl_divergence" in out


def test_a_grid_coarser_than_stated_fails_the_codec_property(project):
    """A codec whose grid is 8 % coarser than its bits, and whose packed tensor states that coarser step:
    the bound from the data's own range and the documented bits catches it; unchanged, it passes."""
    r = run(project, "suites/test_properties_codec.py", "--kvcheck-methods", "kivi", "-k", "round_trip")
    assert r.ret == 0, r.stdout.str()
    r = run(project, "suites/test_properties_codec.py", "--kvcheck-methods", "kivi", "-k", "round_trip",
            plant="coarse")
    r.assert_outcomes(failed=1)
    out = r.stdout.str()
    assert "values:" in out and "over the bound its documented grid gives on the data's range" in out, out


def test_a_method_fallen_to_random_fails_accuracy_on_beats_random(project):
    """tova keeping a random choice of the prompt: it falls to random's level, and beats_random says so;
    unchanged, it beats random (4 of 4 against 2 of 4 on the smoke tier) and passes."""
    accept(project, "test_accuracy.py", "full,tova,random")
    r = run(project, "suites/test_accuracy.py", "--kvcheck-methods", "full,tova,random")
    assert r.ret == 0, r.stdout.str()
    assert re.search(r"tova-r0.5 +accuracy +passkey-L256.beats_random .* ok", r.stdout.str()), r.stdout.str()
    r = run(project, "suites/test_accuracy.py", "--kvcheck-methods", "full,tova,random", plant="random")
    out = r.stdout.str()
    r.assert_outcomes(passed=2, failed=1)
    assert "tova-r0.5 regressed in accuracy on" in out and "beats_random" in out, out
    assert "no better than evicting at random" in out, out


def test_suppressed_eos_fails_length_drift(project):
    accept(project, "test_length_drift.py", "full,snapkv")
    r = run(project, "suites/test_length_drift.py", "--kvcheck-methods", "full,snapkv", plant="eos")
    r.assert_outcomes(passed=1, failed=1)
    out = r.stdout.str()
    assert "snapkv-r0.5-w16-k5-pavg regressed in drift on" in out
    assert "share_hit_cap" in out and "latency_ratio" in out


def test_three_times_slower_scoring_fails_throughput(project):
    accept(project, "test_throughput.py", "full,snapkv")
    r = run(project, "suites/test_throughput.py", "--kvcheck-methods", "full,snapkv", plant="slow")
    out = r.stdout.str()
    r.assert_outcomes(passed=1, failed=1, skipped=2)
    assert "snapkv-r0.5-w16-k5-pavg regressed in throughput on" in out and "compress_share" in out
    assert "work.prefill.method_flops" in out
    # without perf entries for this machine the timings are not measured: the counted work fails it alone
    for path in (project.path / "baselines").rglob("*.json"):
        data = json.loads(path.read_text())
        data["perf"] = {}
        path.write_text(json.dumps(data))
    r = run(project, "suites/test_throughput.py", "--kvcheck-methods", "full,snapkv", "-rs", plant="slow")
    r.assert_outcomes(passed=1, failed=1, skipped=2)
    out = r.stdout.str()
    assert "regressed in throughput on" in out and "work.prefill.method_ops" in out and "compress_share" not in out
    # on another software path (no counted-work entry either): KV bytes gated, then a skip saying why
    for path in (project.path / "baselines").rglob("*.json"):
        data = json.loads(path.read_text())
        data["work"] = {"cuda-bfloat16-flash-torch9.9-transformers9.9": next(iter(data["work"].values()))}
        path.write_text(json.dumps(data))
    r = run(project, "suites/test_throughput.py", "--kvcheck-methods", "full,snapkv", "-rs", plant="slow")
    r.assert_outcomes(skipped=4)
    out = r.stdout.str()
    assert "no counted-work baseline for software path 'cpu-float32-sdpa" in out
    assert "timings not measured; KV bytes gated" in out and "b1-L256.kv_ratio" in out


def test_eviction_stopped_while_generating_fails_throughput(project):
    """Outputs may stay good; the bytes held still grow past the budget, and the gate says so."""
    accept(project, "test_throughput.py", "full,streaming_llm")
    r = run(project, "suites/test_throughput.py", "--kvcheck-methods", "full,streaming_llm", plant="grow")
    r.assert_outcomes(passed=1, failed=1, skipped=2)
    out = r.stdout.str()
    assert "streaming_llm-r0.5-s4 regressed in throughput on" in out and "b1-L256.kv_growth" in out


def test_eviction_stopped_while_generating_fails_drift_on_peak_bytes(project):
    """Generating to EOS or the cap, the most bytes held grow past the budget: the drift gate says so."""
    accept(project, "test_length_drift.py", "full,streaming_llm")
    r = run(project, "suites/test_length_drift.py", "--kvcheck-methods", "full,streaming_llm", plant="grow")
    r.assert_outcomes(passed=1, failed=1)
    out = r.stdout.str()
    assert "streaming_llm-r0.5-s4 regressed in drift on" in out and "kv_peak_ratio" in out


def test_an_engine_change_fails_as_the_reference_changed_even_where_it_looks_better(project):
    """Every answer one token shorter moves full with the method: ratios to full hide it, and shorter
    looks better (fewer answers hit the cap). full's own rows and the reference outputs fail it."""
    accept(project, "test_length_drift.py", "full,snapkv")
    r = run(project, "suites/test_length_drift.py", "--kvcheck-methods", "full,snapkv", plant="short")
    r.assert_outcomes(failed=2)
    out = r.stdout.str()
    assert "snapkv-r0.5-w16-k5-pavg changed in drift on" in out and "the reference changed" in out
    assert "full changed in drift on" in out and "reference.changed" in out
    assert "CHANGED" in out


def test_missing_baseline_is_written_and_fails_then_passes(project):
    r = run(project, "suites/test_fidelity.py", "--kvcheck-methods", "full")
    r.assert_outcomes(failed=1)
    assert "new baseline written to" in r.stdout.str() and "review it and commit it".lower() in r.stdout.str().lower()
    written = baselines(project)
    assert list(written) == ["smollm2-135m-instruct/smoke-float32/fidelity/full.json"]
    data = json.loads(next(iter(written.values())))
    assert data["schema"] == 1 and data["key"]["method_id"] == "full" and "kl_divergence" in data["metrics"]
    r = run(project, "suites/test_fidelity.py", "--kvcheck-methods", "full")
    r.assert_outcomes(passed=1)
    assert baselines(project) == written  # a passing run changes nothing


def test_corrupt_baseline_is_reported_and_kept(project):
    path = project.path / "baselines/smollm2-135m-instruct/smoke-float32/fidelity/full.json"
    path.parent.mkdir(parents=True)
    path.write_text('{"schema": 1, "key": {')
    r = run(project, "suites/test_fidelity.py", "--kvcheck-methods", "full", "--kvcheck-update=all")
    r.assert_outcomes(failed=1)
    assert "is not valid JSON" in r.stdout.str() and "git checkout" in r.stdout.str()
    assert path.read_text() == '{"schema": 1, "key": {'


def test_update_modes(project):
    accept(project, "test_fidelity.py", "full,snapkv")
    before = baselines(project)
    key = "smollm2-135m-instruct/smoke-float32/fidelity/snapkv-r0.5-w16-k5-pavg.json"
    # a changed method fails without an update, and the file stays as it was
    r = run(project, "suites/test_fidelity.py", "--kvcheck-methods", "snapkv", plant="slow")
    r.assert_outcomes(passed=1)  # slower scoring does not change fidelity
    data = json.loads(before[key])
    data["metrics"]["kl_divergence"]["value"] = 0.0  # pretend the baseline was perfect
    data["metrics"]["kl_divergence"]["tolerance"] = 0.0
    (project.path / "baselines" / key).write_text(json.dumps(data))
    r = run(project, "suites/test_fidelity.py", "--kvcheck-methods", "snapkv")
    r.assert_outcomes(failed=1)
    assert "kl_divergence" in r.stdout.str()
    # =new does not touch existing files
    r = run(project, "suites/test_fidelity.py", "--kvcheck-methods", "snapkv", "--kvcheck-update=new")
    r.assert_outcomes(failed=1)
    # =all rewrites what ran, and only that
    r = run(project, "suites/test_fidelity.py", "--kvcheck-methods", "snapkv", "--kvcheck-update=all")
    r.assert_outcomes(passed=1)
    after = baselines(project)
    assert json.loads(after[key])["metrics"] == json.loads(before[key])["metrics"]
    assert after["smollm2-135m-instruct/smoke-float32/fidelity/full.json"] == \
        before["smollm2-135m-instruct/smoke-float32/fidelity/full.json"]


def test_xdist_gives_the_same_rows(project):
    accept(project, "test_fidelity.py", "full,snapkv,kivi")
    sel = ("--kvcheck-methods", "full,snapkv,kivi")
    serial = run(project, "suites/test_fidelity.py", *sel, "--kvcheck-report", "serial.json")
    parallel = run(project, "suites/test_fidelity.py", *sel, "-n", "2", "--kvcheck-report", "parallel.json")
    serial.assert_outcomes(passed=3)
    parallel.assert_outcomes(passed=3)
    rows = lambda name: sorted(json.dumps(r, sort_keys=True)  # noqa: E731
                               for r in json.loads((project.path / name).read_text())["rows"])
    assert rows("serial.json") == rows("parallel.json") and rows("serial.json")
    assert "kvcheck: " in parallel.stdout.str() and "ok" in parallel.stdout.str()
