"""Defaults that need no torch to read."""

DEFAULT_MODEL = "smollm2-135m-instruct"  # the embedded SmolLM2-135M-Instruct
__version__ = "0.1.0"
