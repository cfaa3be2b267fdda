"""What every console script shares: logging set-up, root-folder flags, and clean error exits."""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Callable, Optional, Sequence

from ..paths import TranssegError


def add_root_arguments(parser: argparse.ArgumentParser, *kinds: str) -> None:
    for kind in kinds:
        parser.add_argument(f"--{kind}_root", default=None,
                            help=f"{kind} data root (default: $TRANSSEG_{kind})")


def add_dataset_arguments(parser: argparse.ArgumentParser, num_processes: bool = True) -> None:
    """``-d`` (one or more dataset ids) and, for stages that work per case, ``-np``."""
    parser.add_argument("-d", "--dataset", required=True, nargs="+",
                        help="dataset id(s): 3, Task03_Liver or Dataset003_Liver")
    if num_processes:
        parser.add_argument("-np", "--num_processes", type=int, default=2, help="worker processes (default 2)")


def add_verbosity(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def run_cli(body: Callable[[argparse.Namespace], object], parser: argparse.ArgumentParser,
            argv: Optional[Sequence[str]] = None) -> int:
    """Parse, run, and turn a TranssegError into one message on stderr and exit status 1."""
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if getattr(args, "verbose", False) else logging.INFO,
                        format="%(message)s", force=True)
    try:
        body(args)
    except TranssegError as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted", file=sys.stderr)
        return 130
    return 0


def not_implemented(name: str, what: str) -> Callable[[Optional[Sequence[str]]], int]:
    """A console script for a stage that does not exist yet: a clear message, exit status 2."""
    def main(argv: Optional[Sequence[str]] = None) -> int:
        parser = argparse.ArgumentParser(prog=name, description=f"{what} (not implemented yet)")
        parser.add_argument("args", nargs=argparse.REMAINDER)
        parser.parse_args(argv)
        print(f"{name}: {what} is not implemented yet in this TransSeg version.", file=sys.stderr)
        return 2
    return main
