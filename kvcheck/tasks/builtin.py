"""Imports every built-in synthetic task, so each registers itself."""
from . import fewshot, kv_retrieval, multikey, passkey, variable_tracking  # noqa: F401
