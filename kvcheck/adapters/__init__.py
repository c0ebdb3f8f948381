"""Third-party compression methods as kvcheck methods.

- :mod:`kvcheck.adapters.kvpress`: kvpress ``ScorerPress`` presses (``KvpressMethod``); needs the
  ``kvpress`` extra.
- :mod:`kvcheck.adapters.hf_quantized`: transformers' ``QuantizedCache`` backends (``HFQuantized``).

Each adapter imports its third-party package only when a method is built, and raises a
``KvcheckError`` saying what to install when it is missing.
"""
