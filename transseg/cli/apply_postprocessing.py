"""transseg_apply_postprocessing -i PREDS -o OUT -m MODEL: a model's postprocessing.json on existing predictions."""
from __future__ import annotations

import argparse
from typing import Optional, Sequence

from .common import POSITIVE_INT, add_verbosity, run_cli


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="transseg_apply_postprocessing",
        description="Apply the post-processing that transseg_find_best_configuration chose (postprocessing.json in "
                    "the model folder) to a folder of label files; each output keeps its input's geometry.")
    parser.add_argument("-i", "--input", required=True, help="folder of predicted label files")
    parser.add_argument("-o", "--output", required=True, help="folder for the post-processed files")
    parser.add_argument("-m", "--model_folder", required=True,
                        help="the model (or ensemble) folder holding postprocessing.json")
    parser.add_argument("-np", "--num_processes", type=POSITIVE_INT, default=2, help="worker processes (default 2)")
    add_verbosity(parser)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    def body(args: argparse.Namespace) -> None:
        from ..crossval.apply import apply_postprocessing_to_folder
        apply_postprocessing_to_folder(args.input, args.output, args.model_folder, args.num_processes)
    return run_cli(body, build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
