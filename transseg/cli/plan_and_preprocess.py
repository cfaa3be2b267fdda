"""transseg_plan_and_preprocess -d 3: fingerprint, plans, then preprocessing."""
from __future__ import annotations

import argparse
from typing import Optional, Sequence

from ..planning.entrypoints import run_extract_fingerprint, run_plan_experiment
from .common import run_cli
from .extract_fingerprint import add_fingerprint_arguments
from .plan_experiment import add_planner_arguments, planner_options


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="transseg_plan_and_preprocess",
                                     description="Fingerprint the dataset, write plans, preprocess the cases.")
    add_fingerprint_arguments(parser)
    add_planner_arguments(parser)
    parser.add_argument("--no_preprocessing", action="store_true", help="stop after planning")
    parser.add_argument("--overwrite", action="store_true",
                        help="redo preprocessed cases even when they match the current plans")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    def body(args):
        options = planner_options(args)      # checked before the first case is read
        for dataset in args.dataset:
            run_extract_fingerprint(dataset, args.raw_root, args.preprocessed_root, args.num_processes,
                                    args.verify_dataset_integrity, args.clean)
            plans_file = run_plan_experiment(dataset, args.raw_root, args.preprocessed_root, options,
                                             args.plans_name)
            if not args.no_preprocessing:
                from ..preprocessing.entrypoints import run_preprocess
                run_preprocess(dataset, args.raw_root, args.preprocessed_root, args.num_processes,
                               args.overwrite, plans_file.stem)
    return run_cli(body, build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
