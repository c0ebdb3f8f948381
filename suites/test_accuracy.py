"""Per-sample accuracy on synthetic long-context tasks (passkey at two lengths + key–value retrieval),
and on each task given with ``--kvcheck-task`` (LongBench / RULER files, or more synthetic tasks), whose
baselines are filed apart (suite ``accuracy-<task>``).

Gates on each task's accuracy and on the samples: a sample the baseline got right that the method
now gets wrong is a regression beyond one flip; the failure lists the sample ids, expected vs got.
"""


def test_accuracy(kv_method, kv_tasks, kvcheck):
    measured = kvcheck.runner.measure_accuracy(kv_method, kv_tasks.specs)
    kvcheck.check(kv_tasks.suite, kv_method, measured)
