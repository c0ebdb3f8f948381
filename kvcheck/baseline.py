"""Baselines: the names older code and tests import (see :mod:`kvcheck.store` and :mod:`kvcheck.judge`)."""
from .judge import DIRECTIONS, Row, compare, compare_metric, flipped, format_rows, metric  # noqa: F401
from .store import SCHEMA, BaselineError, BaselineKey, BaselineStore, baseline_path, load, save  # noqa: F401
