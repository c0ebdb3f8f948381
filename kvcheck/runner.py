"""What each suite measures, for one method, with the work shared across methods in a session.

A :class:`Runner` holds the model and the tier; it captures each prompt batch's prefill once and
replays it per method (identical to a live prefill, see ``engine.replay``), and computes the full
cache's reference outputs once. Each ``measure_*`` returns a :class:`Measured` the gate compares.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass, field

import torch

from . import engine
from .baseline import metric
from .methods.full import Full
from .metrics import drift as drift_m
from .metrics import fidelity as fid
from .tasks.spec import tier_set
from .tasks.texts import open_ended, passage_text


@dataclass
class Measured:
    metrics: dict  # name -> metric(value, tolerance, direction)
    samples: dict | None = None  # id -> per-sample record (accuracy-like suites)
    perf: dict | None = None  # name -> metric, machine-specific
    details: dict = field(default_factory=dict)  # stored for inspection, never compared
    sample_allowance: int = 0  # right→wrong flips tolerated
    skip_reason: str | None = None  # throughput: why timings were not measured (the test then skips)


class Runner:
    def __init__(self, lm, tier):
        self.lm, self.tier = lm, tier
        self._prefills: dict = {}
        self._refs: dict = {}

    # ---- shared work -------------------------------------------------------------------------
    def _batches(self, key, samples, max_new):
        """Captured prefills of ``samples`` in tier-sized batches, computed once per session."""
        if key not in self._prefills:
            bs = self.tier.batch_size
            self._prefills[key] = [engine.capture_prefill(self.lm, samples[i:i + bs], max_new)
                                   for i in range(0, len(samples), bs)]
        return self._prefills[key]

    def _generate(self, key, samples, method, max_new):
        recs = []
        for pre in self._batches(key, samples, max_new):
            recs += engine.generate_batch(self.lm, pre.samples, method, max_new, shared=pre)
        return recs

    # ---- accuracy ----------------------------------------------------------------------------
    def _task_samples(self, spec):
        key = ("samples", spec)
        if key not in self._refs:
            context = int(getattr(self.lm.model.config, "max_position_embeddings", 0) or 0)
            self._refs[key] = spec.samples(self.lm.tokenizer, context)
        return self._refs[key]

    def measure_accuracy(self, method, specs=None) -> Measured:
        """Accuracy per task and per sample: the tier's synthetic tasks, or ``specs`` (TaskSpecs)."""
        metrics, samples = {}, {}
        for spec in specs if specs is not None else tier_set(self.tier).specs:
            task = spec.task
            items = self._task_samples(spec)
            recs = self._generate(("acc", spec), items, method, task.max_new_tokens)
            n = len(items)
            scores = []
            for s, r in zip(items, recs):
                score = float(task.score(s, r.output_text))
                scores.append(score)
                samples[s.id] = {"score": round(score, 6), "correct": score >= 0.5, "length": r.output_tokens,
                                 "expected": s.answer, "got": r.output_text.strip()[:60]}
            # one sample of slack on the aggregate: tolerates a single borderline flip across machines
            metrics[f"{spec.label}.accuracy"] = metric(statistics.fmean(scores), 1.0 / n, "higher")
        return Measured(metrics, samples=samples, sample_allowance=1)

    # ---- fidelity ----------------------------------------------------------------------------
    def _fidelity_inputs(self):
        if "fid" not in self._refs:
            t = self.tier
            tok = self.lm.tokenizer
            prompts, conts = [], []
            for i in range(t.fidelity_texts):
                ids = tok(passage_text(i, 6), add_special_tokens=False)["input_ids"]
                need = t.fidelity_prompt + t.fidelity_continuation
                while len(ids) < need:
                    ids = ids + ids
                prompts.append(ids[:t.fidelity_prompt])
                conts.append(ids[t.fidelity_prompt:need])
            pre = engine.capture_tokens(self.lm, prompts)
            ref = engine.teacher_forced(self.lm, prompts, conts, Full(), record_attention=True, shared=pre)
            self._refs["fid"] = (prompts, conts, pre, ref)
        return self._refs["fid"]

    def measure_fidelity(self, method) -> Measured:
        prompts, conts, pre, ref = self._fidelity_inputs()
        res = engine.teacher_forced(self.lm, prompts, conts, method, record_attention=True, shared=pre)
        kl = statistics.fmean(fid.kl_divergence(r.logits, m.logits) for r, m in zip(ref, res))
        top1 = statistics.fmean(fid.top1_agreement(r.logits, m.logits) for r, m in zip(ref, res))
        targets = [torch.tensor(c) for c in conts]
        ref_nll = statistics.fmean(fid.nll(r.logits, t) for r, t in zip(ref, targets))
        nll = statistics.fmean(fid.nll(m.logits, t) for m, t in zip(res, targets))
        per_layer = [statistics.fmean(errs) for errs in zip(*(fid.layer_errors(r.attention, m.attention)
                                                              for r, m in zip(ref, res)))]
        positions = sum(len(c) for c in conts)
        mean_err, max_err = statistics.fmean(per_layer), max(per_layer)
        metrics = {
            "kl_divergence": metric(kl, max(0.1 * kl, 1e-4), "lower"),
            "top1_agreement": metric(top1, 2.0 / positions, "higher"),
            "perplexity_ratio": metric(fid.perplexity_ratio(ref_nll, nll), 0.02 * fid.perplexity_ratio(ref_nll, nll) + 1e-4, "lower"),
            "attn_rel_error.mean": metric(mean_err, max(0.1 * mean_err, 1e-4), "lower"),
            "attn_rel_error.max": metric(max_err, max(0.1 * max_err, 1e-4), "lower"),
        }
        details = {"attn_rel_error.per_layer": [round(e, 6) for e in per_layer],
                   "worst_layer": int(max(range(len(per_layer)), key=per_layer.__getitem__))}
        return Measured(metrics, details=details)

    # ---- length drift ------------------------------------------------------------------------
    def _drift_ref(self):
        if "drift" not in self._refs:
            items = open_ended(self.tier.drift_prompts)
            self._refs["drift"] = (items, self._generate(("drift",), items, Full(), self.tier.drift_cap))
        return self._refs["drift"]

    def measure_drift(self, method) -> Measured:
        items, ref = self._drift_ref()
        cap = self.tier.drift_cap
        recs = self._generate(("drift",), items, method, cap)
        s = drift_m.drift_summary([r.output_tokens for r in ref], [r.output_tokens for r in recs], cap,
                                  [not r.hit_eos and r.output_tokens >= cap for r in recs])
        n = len(items)
        metrics = {
            "median_diff_pct": metric(s["median_diff_pct"], 10.0, "higher"),
            "share_20pct_longer": metric(s["share_20pct_longer"], 1.0 / n, "lower"),
            "share_hit_cap": metric(s["share_hit_cap"], 1.0 / n, "lower"),
            "latency_ratio": metric(s["latency_ratio"], 0.1, "lower"),
        }
        samples = {it.id: {"score": round(d, 3), "correct": d > -20.0, "length": r.output_tokens,
                           "expected": str(f.output_tokens), "got": str(r.output_tokens)}
                   for it, r, f, d in zip(items, recs, ref, s["_diffs"])}
        return Measured(metrics, samples=samples, sample_allowance=1)

    # ---- throughput --------------------------------------------------------------------------
    def measure_throughput(self, method, grid=None, repeats=None, decode_steps: int = 4,
                           untimed: str | None = None) -> Measured:
        """KV bytes held / full at each grid point, and (``timed``) prefill / decode time ratios to full.
        With ``untimed`` (the reason), each point is one run of full (once per session) and one of the
        method: timings that no perf baseline of this machine would judge are not measured at all."""
        from .bench import measure_point, prompt_ids, time_run, weight_bytes
        from .metrics import throughput as tp

        grid = grid or self.tier.throughput_grid
        repeats = repeats or self.tier.repeats
        metrics, perf, details = {}, {}, {}
        for batch, length in grid:
            tag = f"b{batch}-L{length}"
            if untimed:
                ids = prompt_ids(self.lm, batch, length)
                key = ("bytes-full", batch, length, decode_steps)
                if key not in self._refs:
                    self._refs[key] = time_run(self.lm, ids, Full(), decode_steps)
                full, m = self._refs[key], time_run(self.lm, ids, method, decode_steps)
                metrics[f"{tag}.kv_ratio"] = metric(m.kv_bytes_fp16 / full.kv_bytes_fp16, 0.005, "lower")
                details[tag] = {"decode_bound": round(tp.decode_bound(weight_bytes(self.lm.model), full.kv_bytes,
                                                                      m.kv_bytes), 4)}
                continue
            p = measure_point(self.lm, method, batch, length, repeats, decode_steps)
            metrics[f"{tag}.kv_ratio"] = metric(p.kv_ratio, 0.005, "lower")
            perf[f"{tag}.prefill_ratio"] = metric(p.prefill_ratio, 0.25, "lower")
            perf[f"{tag}.decode_ratio"] = metric(p.decode_ratio, 0.25, "lower")
            perf[f"{tag}.compress_share"] = metric(p.compress_share, max(0.3 * p.compress_share, 0.005), "lower")
            details[tag] = {"decode_bound": round(p.decode_bound, 4)}  # from bytes: timing-free
        if untimed:
            return Measured(metrics, details=details, skip_reason=untimed)
        return Measured(metrics, perf=perf, details=details)
