"""What every console script shares: logging set-up, root-folder flags, and clean error exits."""
from __future__ import annotations

import argparse
import gc
import importlib
import logging
import os
import sys
import traceback
from typing import Callable, NoReturn, Optional, Sequence

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


def import_with_collector_paused(modules: Sequence[str]) -> None:
    """Import ``modules``, those not loaded yet, with Python's cyclic collector paused; then collect once and
    freeze what they made. Importing torch and timm makes some 650,000 objects, and the collector passes over
    them again and again as they arrive: 0.5-1 s of a 4-5 s start-up on 2 cores. Frozen, they are
    also spared by every later collection."""
    missing = [name for name in modules if name not in sys.modules]
    if not missing:
        return
    enabled = gc.isenabled()
    gc.disable()
    try:
        for name in missing:
            importlib.import_module(name)
    finally:
        gc.collect()
        gc.freeze()
        if enabled:
            gc.enable()


def run_cli(body: Callable[[argparse.Namespace], object], parser: argparse.ArgumentParser,
            argv: Optional[Sequence[str]] = None, imports: Sequence[str] = ()) -> int:
    """Parse, import ``imports`` (see :func:`import_with_collector_paused`), run, and turn any failure into
    one message on stderr and exit status 1 (130 if interrupted).

    A TranssegError (or an OSError, which names its path) is the user's to fix: its message is all
    they need. Anything else is unexpected: its type and message, and a hint to rerun with -v,
    which prints the traceback as well.
    """
    args = parser.parse_args(argv)
    verbose = bool(getattr(args, "verbose", False))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(message)s", force=True)
    try:
        import_with_collector_paused(imports)
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


def exit_without_teardown(main: Callable[[], int]) -> Callable[[], NoReturn]:
    """A console script's entry point that runs ``main`` and ends the process as soon as it returns.

    Tearing down a process that has run torch (every module's objects released, the libraries'
    destructors run, pages the system had reclaimed read back to do so) took 1.6-3.8 s after a
    prediction on 2 cores; ``os._exit`` skips it once the output is flushed. Safe where ``main`` has
    closed everything itself: outputs renamed into place, worker pools and threads shut down. Calling
    ``main(argv)`` from Python is unaffected.
    """
    def entry() -> NoReturn:
        try:
            status = main()
        except SystemExit as stop:       # argparse, after printing: --help (0) or a usage error (2)
            status = stop.code if isinstance(stop.code, int) else 0 if stop.code is None else 1
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    return entry
