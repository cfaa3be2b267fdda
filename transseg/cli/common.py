"""What every console script shares: logging set-up, root-folder flags, and clean error exits."""
from __future__ import annotations

import argparse
import gc
import logging
import sys
import traceback
from typing import Callable, Optional, Sequence

from ..paths import TranssegError
from ..planning.schema import argparse_type, int_at_least

POSITIVE_INT = argparse_type(int, int_at_least(1))
NON_NEGATIVE_INT = argparse_type(int, int_at_least(0))


def add_root_arguments(parser: argparse.ArgumentParser, *kinds: str) -> None:
    for kind in kinds:
        parser.add_argument(f"--{kind}_root", default=None,
                            help=f"{kind} data root (default: $TRANSSEG_{kind})")


def add_dataset_arguments(parser: argparse.ArgumentParser, num_processes: bool = True) -> None:
    """``-d`` (one or more dataset ids) and, for stages that work per case, ``-np``."""
    parser.add_argument("-d", "--dataset", required=True, nargs="+",
                        help="dataset id(s): 3, Task03_Liver or Dataset003_Liver")
    if num_processes:
        parser.add_argument("-np", "--num_processes", type=POSITIVE_INT, default=2,
                            help="worker processes (default 2)")


def add_verbosity(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def run_cli(body: Callable[[argparse.Namespace], object], parser: argparse.ArgumentParser,
            argv: Optional[Sequence[str]] = None) -> int:
    """Parse, run, and turn any failure into one message on stderr and exit status 1 (130 if interrupted).

    A TranssegError (or an OSError, which names its path) is the user's to fix: its message is all
    they need. Anything else is unexpected: its type and message, and a hint to rerun with -v,
    which prints the traceback as well.
    """
    args = parser.parse_args(argv)
    verbose = bool(getattr(args, "verbose", False))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(message)s", force=True)
    try:
        body(args)
        gc.freeze()   # spares the exit a last collection over every object torch and timm made (~1 s)
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:   # noqa: BLE001 -- every failure ends in one message, never a bare traceback
        if verbose:
            traceback.print_exc()
        if isinstance(error, (TranssegError, OSError)):   # OSError: a path and its reason (disk full, ...)
            print(f"{parser.prog}: error: {error}", file=sys.stderr)
        else:
            hint = "" if verbose else " (rerun with -v to see the traceback)"
            print(f"{parser.prog}: error: unexpected {type(error).__name__}: {error}{hint}", file=sys.stderr)
        return 1
    return 0

