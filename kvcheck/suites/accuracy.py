"""Per-sample accuracy on synthetic long-context tasks (passkey at two lengths + key–value retrieval),
and on each task given with ``--kvcheck-task`` (LongBench / RULER files, or more synthetic tasks), whose
baselines are filed apart (suite ``accuracy-<task>``).

Gates on each task's accuracy and on the samples: a sample the baseline got right that the method
now gets wrong is a regression beyond one flip; the failure lists the sample ids, expected vs got.
"""
from .catalog import accuracy_on


def test_accuracy(kv_method, kv_tasks, kv_gate):
    kv_gate.run(accuracy_on(kv_tasks), kv_method)
