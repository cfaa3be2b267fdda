"""transseg_extract_fingerprint -d 3"""
from __future__ import annotations

import argparse
from typing import Optional, Sequence

from ..planning.entrypoints import run_extract_fingerprint
from .common import add_dataset_arguments, add_root_arguments, add_verbosity, run_cli


def add_fingerprint_arguments(parser: argparse.ArgumentParser) -> None:
    add_dataset_arguments(parser)
    parser.add_argument("--verify_dataset_integrity", action="store_true",
                        help="check every case first and report all problems")
    parser.add_argument("--clean", action="store_true", help="recompute an existing fingerprint")
    add_root_arguments(parser, "raw", "preprocessed")
    add_verbosity(parser)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="transseg_extract_fingerprint",
                                     description="Measure a dataset: modality, intensities, spacing, shapes, labels.")
    add_fingerprint_arguments(parser)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    def body(args):
        for dataset in args.dataset:
            run_extract_fingerprint(dataset, args.raw_root, args.preprocessed_root, args.num_processes,
                                    args.verify_dataset_integrity, args.clean)
    return run_cli(body, build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
