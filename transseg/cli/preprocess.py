"""transseg_preprocess -d 3: turn every training case into CASE.npz + CASE.json for the trainer."""
from __future__ import annotations

import argparse
from typing import Optional, Sequence

from .common import add_dataset_arguments, add_root_arguments, add_verbosity, run_cli


def add_preprocess_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--overwrite", action="store_true",
                        help="redo cases already preprocessed with the current plans")
    parser.add_argument("--plans_name", default="plans", help="which plans file to follow (default: plans)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="transseg_preprocess",
                                     description="Crop, resample and normalise every training case as planned.")
    add_dataset_arguments(parser)
    add_preprocess_arguments(parser)
    add_root_arguments(parser, "raw", "preprocessed")
    add_verbosity(parser)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    def body(args):
        from ..preprocessing.entrypoints import run_preprocess
        for dataset in args.dataset:
            run_preprocess(dataset, args.raw_root, args.preprocessed_root, args.num_processes,
                           args.overwrite, args.plans_name)
    return run_cli(body, build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
