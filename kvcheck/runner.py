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


def layout(items: list, batch_size: int, variant: int) -> tuple[list[list], int]:
    """How a run groups its items into batches, and how many extra pad columns each batch gets.
    Variant 0 is the gated run: batches of ``batch_size`` in order, no extra padding. Variant v ≥ 1 is
    a benign perturbation for the noise floor: the items rotated by v, batches of
    max(1, batch_size − 3v), and v extra left-pad columns: other companions and other padded lengths,
    so other floating-point sums, and the same maths."""
    if variant == 0:
        return [items[i:i + batch_size] for i in range(0, len(items), batch_size)], 0
    v = variant % len(items) if items else 0
    rotated = items[v:] + items[:v]
    bs = max(1, batch_size - 3 * variant)
    return [rotated[i:i + bs] for i in range(0, len(rotated), bs)], variant


class Runner:
    def __init__(self, lm, tier):
        self.lm, self.tier = lm, tier
        self._prefills: dict = {}
        self._refs: dict = {}

    # ---- shared work -------------------------------------------------------------------------
    def _batches(self, key, samples, max_new, variant=0, batch_size=None):
        """Captured prefills of ``samples`` in batches (see :func:`layout`), computed once per session."""
        if (key, variant) not in self._prefills:
            groups, pad = layout(list(samples), batch_size or self.tier.batch_size, variant)
            self._prefills[(key, variant)] = [engine.capture_prefill(self.lm, g, max_new, extra_pad=pad)
                                              for g in groups]
        return self._prefills[(key, variant)]

    def _generate(self, key, samples, method, max_new, variant=0, batch_size=None):
        """Records in ``samples``' order, whatever the batching."""
        recs = {}
        for pre in self._batches(key, samples, max_new, variant, batch_size):
            for r in engine.generate_batch(self.lm, pre.samples, method, max_new, shared=pre):
                recs[r.id] = r
        return [recs[s.id] for s in samples]

    # ---- accuracy ----------------------------------------------------------------------------
    def _task_samples(self, spec):
        key = ("samples", spec)
        if key not in self._refs:
            context = int(getattr(self.lm.model.config, "max_position_embeddings", 0) or 0)
            self._refs[key] = spec.samples(self.lm.tokenizer, context)
        return self._refs[key]

    def measure_accuracy(self, method, specs=None, variant: int = 0) -> Raw:
        """Accuracy per task and per sample: the tier's synthetic tasks, or ``specs`` (TaskSpecs)."""
        values, counts, samples = {}, {}, {}
        for spec in specs if specs is not None else tier_set(self.tier).specs:
            task = spec.task
            items = self._task_samples(spec)
            recs = self._generate(("acc", spec), items, method, task.max_new_tokens, variant)
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
    def _fidelity_texts(self):
        t, tok = self.tier, self.lm.tokenizer
        prompts, conts = [], []
        for i in range(t.fidelity_texts):
            ids = tok(passage_text(i, 6), add_special_tokens=False)["input_ids"]
            need = t.fidelity_prompt + t.fidelity_continuation
            while len(ids) < need:
                ids = ids + ids
            prompts.append(ids[:t.fidelity_prompt])
            conts.append(ids[t.fidelity_prompt:need])
        return prompts, conts

    def _fidelity_inputs(self, variant=0):
        """Per batch of the layout: the captured prompt pass, the passage continuations with the full
        cache's teacher-forced outputs, and the full cache's greedy continuation with its logits."""
        if ("fid", variant) not in self._refs:
            prompts, conts = self._fidelity_texts()
            order, pad = layout(list(range(len(prompts))), len(prompts), variant)
            batches = []
            for idx in order:
                p, c = [prompts[i] for i in idx], [conts[i] for i in idx]
                pre = engine.capture_tokens(self.lm, p, extra_pad=pad)
                ref = engine.teacher_forced(self.lm, p, c, Full(), record_attention=True, shared=pre)
                greedy = engine.greedy_tokens(self.lm, pre, Full(), self.tier.fidelity_continuation)
                batches.append((idx, p, c, pre, ref, greedy, engine.forced_decode(self.lm, pre, Full(), greedy)))
            self._refs[("fid", variant)] = batches
        return self._refs[("fid", variant)]

    def measure_fidelity(self, method, variant: int = 0) -> Raw:
        """Teacher-forced fidelity (the passage continuation in one forward) and decode-time fidelity
        along the full cache's greedy trajectory (one token per forward, so compression while
        generating acts): KL, top-1 agreement, and how many tokens match before the first divergence."""
        per_text = {}
        for idx, p, c, pre, ref, greedy, ref_logits in self._fidelity_inputs(variant):
            res = engine.teacher_forced(self.lm, p, c, method, record_attention=True, shared=pre)
            dec = engine.forced_decode(self.lm, pre, method, greedy)
            for j, i in enumerate(idx):
                per_text[i] = (c[j], ref[j], res[j], greedy[j], ref_logits[j], dec[j])
        rows = [per_text[i] for i in sorted(per_text)]
        kl = statistics.fmean(fid.kl_divergence(r.logits, m.logits) for _, r, m, *_ in rows)
        top1 = statistics.fmean(fid.top1_agreement(r.logits, m.logits) for _, r, m, *_ in rows)
        targets = [torch.tensor(c) for c, *_ in rows]
        ref_nll = statistics.fmean(fid.nll(r.logits, t) for (_, r, *_), t in zip(rows, targets))
        nll = statistics.fmean(fid.nll(m.logits, t) for (_, _, m, *_), t in zip(rows, targets))
        per_layer = [statistics.fmean(errs) for errs in zip(*(fid.layer_errors(r.attention, m.attention)
                                                              for _, r, m, *_ in rows))]
        positions = sum(len(c) for c, *_ in rows)
        matched = [fid.match_length(g, d) for *_, g, _, d in rows]
        steps = sum(len(g) for *_, g, _, _ in rows)
        values = {"kl_divergence": kl, "top1_agreement": top1, "perplexity_ratio": fid.perplexity_ratio(ref_nll, nll),
                  "attn_rel_error.mean": statistics.fmean(per_layer), "attn_rel_error.max": max(per_layer),
                  "decode.kl_divergence": statistics.fmean(fid.kl_divergence(rl, d) for *_, rl, d in rows),
                  "decode.top1_agreement": statistics.fmean(fid.top1_agreement(rl, d) for *_, rl, d in rows),
                  "decode.match_tokens": statistics.fmean(matched)}
        details = {"attn_rel_error.per_layer": [round(e, 6) for e in per_layer],
                   "worst_layer": int(max(range(len(per_layer)), key=per_layer.__getitem__)),
                   "decode.first_divergence": matched}
        return Raw(values, {"top1_agreement": positions, "decode.top1_agreement": steps,
                            "decode.match_tokens": len(rows)}, details=details)

    # ---- length drift ------------------------------------------------------------------------
    def _drift_ref(self, variant=0):
        if ("drift", variant) not in self._refs:
            items = open_ended(self.tier.drift_prompts)
            self._refs[("drift", variant)] = (items, self._generate(("drift",), items, Full(), self.tier.drift_cap,
                                                                    variant, self.tier.drift_batch))
        return self._refs[("drift", variant)]

    def measure_drift(self, method, variant: int = 0) -> Raw:
        items, ref = self._drift_ref(variant)
        cap = self.tier.drift_cap
        recs = self._generate(("drift",), items, method, cap, variant, self.tier.drift_batch)
        s = drift_m.drift_summary([r.output_tokens for r in ref], [r.output_tokens for r in recs], cap,
                                  [not r.hit_eos and r.output_tokens >= cap for r in recs])
        n = len(items)
        names = ("median_diff_pct", "share_20pct_longer", "share_hit_cap", "latency_ratio")
        samples = {it.id: {"score": d, "length": r.output_tokens, "expected": str(f.output_tokens),
                           "got": str(r.output_tokens)}
                   for it, r, f, d in zip(items, recs, ref, s["_diffs"])}
        values = {k: s[k] for k in names}
        # the most KV bytes held at any step while generating to EOS or the cap, over full's most
        values["kv_peak_ratio"] = max(r.kv_peak_ratio for r in recs)
        return Raw(values, {k: n for k in values}, samples=samples)

    # ---- throughput --------------------------------------------------------------------------
    def _count(self, method, batch, length, steps):
        from .bench import count_run, prompt_ids

        return count_run(self.lm, prompt_ids(self.lm, batch, length), method, steps)

    def measure_throughput(self, method, grid=None, repeats=None, decode_steps: int = 4,
                           untimed: str | None = None, work_steps: int = 8) -> Raw:
        """KV bytes held / full after prefill and their growth over ``work_steps`` decode steps, the
        counted work (:mod:`kvcheck.work`, at the grid's first point: the method region per prefill and
        per decode step, KV-path bytes, host syncs) with its predicted GPU speed-ups, and (``timed``)
        prefill / decode time ratios to full. With ``untimed`` (the reason), no timing is measured:
        timings that no perf baseline of this machine would judge are not measured at all."""
        from .bench import measure_point, weight_bytes
        from .metrics import roofline
        from .metrics import throughput as tp
        from .metrics.work import work_metrics

        grid = grid or self.tier.throughput_grid
        repeats = repeats or self.tier.repeats
        values, perf, details, work, aa_noise = {}, {}, {}, None, {}
        for i, (batch, length) in enumerate(grid):
            tag = f"b{batch}-L{length}"
            key = ("work-full", batch, length, work_steps)
            if key not in self._refs:
                self._refs[key] = self._count(Full(), batch, length, work_steps)
            full, m = self._refs[key], self._count(method, batch, length, work_steps)
            values[f"{tag}.kv_ratio"] = m.kv_ratio
            values[f"{tag}.kv_growth"] = m.kv_bytes_end / m.kv_bytes_prefill
            details[tag] = {"decode_bound": round(tp.decode_bound(weight_bytes(self.lm.model), full.kv_bytes_prefill,
                                                                  m.kv_bytes_prefill), 4),
                            "predicted": {g: {k: round(v, 4) for k, v in r.items()}
                                          for g, r in roofline.predicted_ratios(m.work, full.work).items()}}
            if i == 0:
                work = work_metrics(m.work)
                details["work_point"] = {"point": tag, "decode_steps": work_steps}
            if untimed:
                continue
            p = measure_point(self.lm, method, batch, length, repeats, decode_steps)
            perf[f"{tag}.prefill_ratio"] = p.prefill_ratio
            perf[f"{tag}.decode_ratio"] = p.decode_ratio
            perf[f"{tag}.compress_share"] = p.compress_share
            # the A/A ratio's distance from 1 is this run's relative timing error, per timed quantity
            aa_noise[f"{tag}.prefill_ratio"] = abs(p.aa_prefill - 1) * p.prefill_ratio
            aa_noise[f"{tag}.decode_ratio"] = abs(p.aa_decode - 1) * p.decode_ratio
            aa_noise[f"{tag}.compress_share"] = abs(p.aa_prefill - 1) * p.compress_share
        if untimed:
            return Raw(values, details=details, skip_reason=untimed, work=work)
        return Raw(values, perf=perf, details=details, work=work, perf_noise=aa_noise)
