"""Per-sample accuracy on synthetic long-context tasks (passkey at two lengths + key–value retrieval).

Gates on each task's accuracy and on the samples: a sample the baseline got right that the method
now gets wrong is a regression beyond one flip; the failure lists the sample ids, expected vs got.
"""


def test_accuracy(kv_method, kvcheck):
    measured = kvcheck.runner.measure_accuracy(kv_method)
    kvcheck.check("accuracy", kv_method, measured)
