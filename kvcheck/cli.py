"""``kvcheck`` command line: one sub-command per module in ``kvcheck.commands``."""
from __future__ import annotations

import argparse
import importlib
import sys

from .errors import KvcheckError

COMMANDS = {
    "eval": "Run methods on a task and print accuracy, length, KV bytes and speed.",
    "methods": "List the registered methods and their parameters.",
    "bench": "Throughput, latency and memory of methods as ratios to full, in one run.",
    "samples": "Per-sample analysis: flips and negative samples, from results or score files.",
    "report": "HTML report with plots from JSON results.",
    "init": "Write kvcheck's suites, a conftest.py and a CI workflow into your repository.",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kvcheck", description="Regression gates for KV-cache compression.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_text in COMMANDS.items():
        try:
            module = importlib.import_module(f"kvcheck.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"kvcheck.commands.{name}":
                raise
            continue
        p = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(p)
        p.set_defaults(run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return 2
    try:
        return int(args.run(args) or 0)
    except KvcheckError as exc:
        print(f"kvcheck: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a file that could not be read or written
        print(f"kvcheck: error: {exc}; check the path and its permissions.", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("kvcheck: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
