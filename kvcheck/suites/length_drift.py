"""Output-length drift on open-ended instruction prompts (chat template), generated to EOS or a cap.

Per request diff% = (len_full − len_method) / len_full × 100 (negative: longer). Gates on the median
diff%, the share of requests ≥ 20 % longer, the share hitting the cap, and the end-to-end latency
ratio the lengths imply (method tokens / full tokens)."""
from .catalog import DRIFT


def test_length_drift(kv_method, kv_gate):
    kv_gate.run(DRIFT, kv_method)
