"""The `ftsweep` command line: a parser, a handler per command, shell completion."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from search.cli import commands
from search.cli.parser import build_parser
from trainables.errors import UserError

__all__ = ["build_parser", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Runs one command; exit code 2 with one paragraph for bad input, 130 for Ctrl-C."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    handler = getattr(commands, args.command.replace("-", "_"))
    try:
        return int(handler(args) or 0)
    except UserError as exc:
        print(f"ftsweep: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ftsweep: interrupted", file=sys.stderr)
        return 130
