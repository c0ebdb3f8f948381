"""A progress bar on stderr (tqdm), silent when asked or when stderr is not a terminal in CI."""
from __future__ import annotations

import os
import sys


def bar(total: int, desc: str, quiet: bool = False):
    from tqdm import tqdm

    disable = quiet or (os.environ.get("CI") == "true" and not sys.stderr.isatty())
    return tqdm(total=total, desc=desc, unit="sample", file=sys.stderr, disable=disable, leave=False)
