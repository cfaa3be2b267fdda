"""transseg_find_best_configuration -d 3 -p plans plans_k1: compare configurations over their folds and choose."""
from __future__ import annotations

import argparse
from typing import Optional, Sequence

from .common import NON_NEGATIVE_INT, POSITIVE_INT, add_root_arguments, add_verbosity, run_cli


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="transseg_find_best_configuration",
        description="Pool each configuration's fold validation results, score every pair of configurations with "
                    "probabilities (--npz) as an ensemble, choose the best by foreground mean Dice, measure "
                    "post-processing on its predictions, and write crossval_results.json, crossval.png and "
                    "inference_instructions.md into the dataset's results folder.")
    parser.add_argument("-d", "--dataset", required=True, help="dataset id: 3, Task03_Liver or Dataset003_Liver")
    parser.add_argument("-p", "--plans", nargs="+", default=["plans"],
                        help="plans names of the configurations to compare (default: plans)")
    parser.add_argument("-f", "--folds", nargs="+", type=NON_NEGATIVE_INT, default=None,
                        help="folds to pool (default: all folds of the plans; a missing one is named)")
    parser.add_argument("--no_ensembles", action="store_true", help="do not score ensembles of configurations")
    parser.add_argument("--no_postprocessing", action="store_true", help="do not measure post-processing")
    parser.add_argument("-np", "--num_processes", type=POSITIVE_INT, default=2, help="worker processes (default 2)")
    add_root_arguments(parser, "results")
    add_verbosity(parser)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    def body(args: argparse.Namespace) -> None:
        from ..crossval import find_best_configuration
        find_best_configuration(args.dataset, args.plans, args.folds, args.results_root,
                                ensembles=not args.no_ensembles, postprocessing=not args.no_postprocessing,
                                num_processes=args.num_processes)
    return run_cli(body, build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
