"""``kvcheck`` command line: one sub-command per module in ``kvcheck.commands``, imported only when
that command runs (``kvcheck --help`` imports none of them)."""
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


def command_module(name: str):
    """The module of one command; a missing one is an error (a broken install), never skipped."""
    module_name = f"kvcheck.commands.{name}"
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        raise KvcheckError(f"the {name!r} command is not available in this kvcheck install ({module_name} is "
                           "missing); reinstall kvcheck.") from None


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """Every command with its help line; only ``command``'s module is imported, to add its arguments."""
    parser = argparse.ArgumentParser(prog="kvcheck", description="Regression gates for KV-cache compression.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_text in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == command:
            module = command_module(name)
            module.add_arguments(p)
            p.set_defaults(run=module.run)
    return parser


def _command_in(argv: list[str]) -> str | None:
    """The command argument: the first one that is not an option (the top level takes no values)."""
    first = next((a for a in argv if not a.startswith("-")), None)
    return first if first in COMMANDS else None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        parser = build_parser(_command_in(argv))
    except KvcheckError as exc:
        print(f"kvcheck: error: {exc}", file=sys.stderr)
        return 2
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
