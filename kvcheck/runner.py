"""What each suite measures, for one method, with the work shared across methods in a session.

A :class:`Runner` holds the model and the tier; it captures each prompt batch's prefill once and
replays it per method (identical to a live prefill, see ``engine.replay``), and computes the full
cache's reference outputs once. Each ``measure_*`` returns a :class:`~kvcheck.suites.base.Raw`:
values only. Tolerances, directions and sample rules belong to the suite values
(:mod:`kvcheck.suites.catalog`).
"""
from __future__ import annotations

import statistics

import torch

from . import engine
from .methods.full import Full
from .metrics import drift as drift_m
from .metrics import fidelity as fid
from .suites.base import Raw
from .tasks.spec import tier_set
from .tasks.texts import open_ended, passage_text


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

    def measure_accuracy(self, method, specs=None) -> Raw:
        """Accuracy per task and per sample: the tier's synthetic tasks, or ``specs`` (TaskSpecs)."""
        values, counts, samples = {}, {}, {}
        for spec in specs if specs is not None else tier_set(self.tier).specs:
            task = spec.task
            items = self._task_samples(spec)
            recs = self._generate(("acc", spec), items, method, task.max_new_tokens)
            n = len(items)
            scores = []
            for s, r in zip(items, recs):
                score = float(task.score(s, r.output_text))
                scores.append(score)
                samples[s.id] = {"score": score, "length": r.output_tokens, "expected": s.answer,
                                 "got": r.output_text.strip()[:60]}
            values[f"{spec.label}.accuracy"] = statistics.fmean(scores)
            counts[f"{spec.label}.accuracy"] = n
        return Raw(values, counts, samples=samples)

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

    def measure_fidelity(self, method) -> Raw:
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
        values = {"kl_divergence": kl, "top1_agreement": top1, "perplexity_ratio": fid.perplexity_ratio(ref_nll, nll),
                  "attn_rel_error.mean": mean_err, "attn_rel_error.max": max_err}
        details = {"attn_rel_error.per_layer": [round(e, 6) for e in per_layer],
                   "worst_layer": int(max(range(len(per_layer)), key=per_layer.__getitem__))}
        return Raw(values, {"top1_agreement": positions}, details=details)

    # ---- length drift ------------------------------------------------------------------------
    def _drift_ref(self):
        if "drift" not in self._refs:
            items = open_ended(self.tier.drift_prompts)
            self._refs["drift"] = (items, self._generate(("drift",), items, Full(), self.tier.drift_cap))
        return self._refs["drift"]

    def measure_drift(self, method) -> Raw:
        items, ref = self._drift_ref()
        cap = self.tier.drift_cap
        recs = self._generate(("drift",), items, method, cap)
        s = drift_m.drift_summary([r.output_tokens for r in ref], [r.output_tokens for r in recs], cap,
                                  [not r.hit_eos and r.output_tokens >= cap for r in recs])
        n = len(items)
        names = ("median_diff_pct", "share_20pct_longer", "share_hit_cap", "latency_ratio")
        samples = {it.id: {"score": d, "length": r.output_tokens, "expected": str(f.output_tokens),
                           "got": str(r.output_tokens)}
                   for it, r, f, d in zip(items, recs, ref, s["_diffs"])}
        return Raw({k: s[k] for k in names}, {k: n for k in names}, samples=samples)

    # ---- throughput --------------------------------------------------------------------------
    def measure_throughput(self, method, grid=None, repeats=None, decode_steps: int = 4,
                           untimed: str | None = None) -> Raw:
        """KV bytes held / full at each grid point, and (``timed``) prefill / decode time ratios to full.
        With ``untimed`` (the reason), each point is one run of full (once per session) and one of the
        method: timings that no perf baseline of this machine would judge are not measured at all."""
        from .bench import measure_point, prompt_ids, time_run, weight_bytes
        from .metrics import throughput as tp

        grid = grid or self.tier.throughput_grid
        repeats = repeats or self.tier.repeats
        values, perf, details = {}, {}, {}
        for batch, length in grid:
            tag = f"b{batch}-L{length}"
            if untimed:
                ids = prompt_ids(self.lm, batch, length)
                key = ("bytes-full", batch, length, decode_steps)
                if key not in self._refs:
                    self._refs[key] = time_run(self.lm, ids, Full(), decode_steps)
                full, m = self._refs[key], time_run(self.lm, ids, method, decode_steps)
                values[f"{tag}.kv_ratio"] = m.kv_ratio
                details[tag] = {"decode_bound": round(tp.decode_bound(weight_bytes(self.lm.model), full.kv_bytes,
                                                                      m.kv_bytes), 4)}
                continue
            p = measure_point(self.lm, method, batch, length, repeats, decode_steps)
            values[f"{tag}.kv_ratio"] = p.kv_ratio
            perf[f"{tag}.prefill_ratio"] = p.prefill_ratio
            perf[f"{tag}.decode_ratio"] = p.decode_ratio
            perf[f"{tag}.compress_share"] = p.compress_share
            details[tag] = {"decode_bound": round(p.decode_bound, 4)}  # from bytes: timing-free
        if untimed:
            return Raw(values, details=details, skip_reason=untimed)
        return Raw(values, perf=perf, details=details)
