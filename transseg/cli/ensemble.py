"""transseg_ensemble -i PRED_A PRED_B -o OUT: average the probabilities of two or more prediction folders."""
from __future__ import annotations

import argparse
from typing import Optional, Sequence

from .common import add_verbosity, run_cli


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="transseg_ensemble",
        description="Ensemble configurations: for every case with a CASE.npz in all input folders (written by "
                    "transseg_predict --save_probabilities), average the probabilities on the scan's grid and write "
                    "the label file.")
    parser.add_argument("-i", "--input", nargs="+", required=True, help="two or more prediction folders")
    parser.add_argument("-o", "--output", required=True, help="folder for the ensembled label files")
    add_verbosity(parser)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    def body(args: argparse.Namespace) -> None:
        from ..crossval import ensemble_folders
        ensemble_folders(args.input, args.output)
    return run_cli(body, build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
