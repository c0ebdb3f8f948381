"""The four gate suites as values: every tolerance and sample rule kvcheck applies is on this page.

A reviewer reads the rules here; the measure functions (:class:`kvcheck.runner.Runner`) return raw
values only. ``per_count(k)`` tolerances are k samples (prompts, positions, tokens) of slack out of
the n behind the metric; ``relative`` ones scale with the value and have a floor for values near 0.
These are floors: a baseline recorded with a noise floor (``NOISE``) widens a metric's tolerance to
k × the spread its perturbed runs showed, and judges per-sample flips on stable samples only.
"""
from __future__ import annotations

from .base import NoiseRule, Rule, SampleRule, Suite, absolute, affine, per_count, relative

NOISE = NoiseRule(variants=2, k=2.0)  # two perturbed runs when recording; tolerance ≥ 2 × the spread
UNIT = (0.0, 1.0)  # a share's range: a row whose baseline is within its tolerance of the far end cannot fail


def _accuracy(workbench, method, ctx):
    return workbench.measure_accuracy(method, ctx.options.get("specs"), variant=ctx.variant)


def _fidelity(workbench, method, ctx):
    return workbench.measure_fidelity(method, variant=ctx.variant)


def _drift(workbench, method, ctx):
    return workbench.measure_drift(method, variant=ctx.variant)


def _throughput(workbench, method, ctx):
    return workbench.measure_throughput(method, untimed=ctx.untimed, **ctx.options)


FIDELITY = Suite(
    "fidelity", _fidelity,
    rules=(Rule("kl_divergence", "lower", relative(0.1, 1e-4)),
           Rule("top1_agreement", "higher", per_count(2.0), UNIT),  # two of the scored positions
           Rule("perplexity_ratio", "lower", affine(0.02, 1e-4)),
           Rule("attn_rel_error.*", "lower", relative(0.1, 1e-4)),
           # decode-time, along the full cache's greedy trajectory, one token per forward
           Rule("decode.kl_divergence", "lower", relative(0.1, 1e-4)),
           Rule("decode.top1_agreement", "higher", per_count(2.0), UNIT),  # two of the decoded positions
           Rule("decode.match_tokens", "higher", per_count(16.0))),  # 16 tokens of one text's match
    noise=NOISE)

ACCURACY = Suite(
    "accuracy", _accuracy,
    rules=(Rule("*.accuracy", "higher", per_count(1.0), UNIT),),  # one sample of slack per task
    samples=SampleRule(correct=lambda score: score >= 0.5, digits=6, describe="right when the task's score ≥ 0.5"),
    feeds_negatives=True, noise=NOISE)

DRIFT = Suite(
    "drift", _drift,
    rules=(Rule("median_diff_pct", "higher", absolute(10.0)),
           Rule("share_20pct_longer", "lower", per_count(2.0), UNIT),  # two of the prompts
           Rule("share_hit_cap", "lower", per_count(2.0), UNIT),
           Rule("latency_ratio", "lower", absolute(0.1)),
           # the most KV bytes held at any step while generating to EOS or the cap / full's most: a method
           # that stops evicting while it generates holds its prompt budget plus every generated token
           Rule("kv_peak_ratio", "lower", absolute(0.01))),
    samples=SampleRule(correct=lambda diff_pct: diff_pct > -20.0, digits=3,
                       describe="right unless ≥ 20 % longer than full's answer"),
    noise=NOISE)

# Timing floors; each timing's tolerance is also at least 3 × its error in the run (the A/A ratio,
# full against full in the same interleaved loop), the larger of the stored and the current one, and a
# timing that fails is measured again before the test fails.
_TIMINGS = (Rule("*.prefill_ratio", "lower", absolute(0.05)),
            Rule("*.decode_ratio", "lower", absolute(0.05)),
            Rule("*.compress_share", "lower", relative(0.1, 0.005)))

# Counted work is exact on one software path: 2 % catches a scorer doing a third more work, and
# nothing on clean code moves it. kv_path_growth: the last decode step's KV-path bytes over the first's.
_WORK = (Rule("work.decode.kv_path_growth", "lower", relative(0.02, 1e-6)),
         Rule("work.*", "lower", relative(0.02, 0.5)))

THROUGHPUT = Suite(
    "throughput", _throughput,
    rules=(Rule("*.kv_ratio", "lower", absolute(0.005)),
           Rule("*.kv_growth", "lower", absolute(0.005))),  # bytes held after the counted decode steps / after prefill
    perf=_TIMINGS, work=_WORK)

GPU_GRID = tuple((b, n) for b in (1, 4, 16) for n in (1024, 4096, 8192))
THROUGHPUT_GPU = THROUGHPUT.with_(name="throughput-gpu",
                                  options={"grid": GPU_GRID, "repeats": 7, "decode_steps": 16})

SUITES = (FIDELITY, ACCURACY, DRIFT, THROUGHPUT, THROUGHPUT_GPU)


def accuracy_on(task_set) -> Suite:
    """The accuracy suite on a task set: the tier's (suite ``accuracy``, feeding the negative-sample
    gate) or a ``--kvcheck-task`` set (suite ``accuracy-<label>``, its own baselines)."""
    return ACCURACY.with_(name=task_set.suite, options={"specs": task_set.specs},
                          feeds_negatives=task_set.suite == ACCURACY.name)
