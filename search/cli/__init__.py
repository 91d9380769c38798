"""The `ftsweep` command line: a parser, a handler per command, shell completion."""

from __future__ import annotations

import errno
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
    for chatty in QUIET_LIBRARIES:
        logging.getLogger(chatty).setLevel(logging.WARNING)
    handler = getattr(commands, args.command.replace("-", "_"))
    try:
        return int(handler(args) or 0)
    except UserError as exc:
        print(f"ftsweep: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ftsweep: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:  # the user's folder: read-only, not theirs, full
        if exc.errno not in UNWRITABLE:
            raise
        print(f"ftsweep: error: {unwritable(exc)}", file=sys.stderr)
        return 2


# Libraries that log each step at INFO: export --format onnx printed a dozen
# lines of the ONNX optimizer's passes ("Removed 182 unused nodes") before its
# own. Their warnings still show.
QUIET_LIBRARIES = ("onnxscript", "onnx_ir")

# A write the machine refused, not a fault of ftsweep's: said in one paragraph.
UNWRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT)


def unwritable(exc: OSError) -> UserError:
    where = exc.filename or "a results or output folder"
    return UserError(
        f"cannot write here ({exc.strerror or exc}). Make the folder writable (or free "
        "space on its disk), or point ftsweep elsewhere (--results for run, --out for "
        "export, evaluate and predict, or copy the sweep folder); what was already "
        "written is kept",
        str(where),
    )
