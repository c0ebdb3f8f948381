"""A progress bar on stderr (tqdm), silent when asked or when stderr is not a terminal in CI."""
from __future__ import annotations

import os
import sys


def bar(total: int, desc: str, quiet: bool = False, unit: str = "sample"):
    from tqdm import tqdm

    in_ci = os.environ.get("CI", "").lower() not in ("", "0", "false")
    disable = quiet or (in_ci and not sys.stderr.isatty())
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, disable=disable, leave=False)
