"""transseg_evaluate -ref LABELS -pred PREDS: Dice, IoU, HD95 and NSD per case and class into summary.json."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional, Sequence

from ..evaluation.evaluate import SUMMARY_NAME, evaluate_folder, labels_from_dataset
from ..evaluation.metrics import DEFAULT_TOLERANCE_MM
from .common import POSITIVE_INT, add_root_arguments, add_verbosity, run_cli


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="transseg_evaluate",
        description="Compare predictions with reference label maps (matched by file name) and write summary.json.")
    parser.add_argument("-ref", "--reference", required=True, help="folder of reference label files")
    parser.add_argument("-pred", "--prediction", required=True, help="folder of predicted label files")
    parser.add_argument("-d", "--dataset", default=None,
                        help="labels from this dataset: an id in the raw root (3, Task03_Liver), a dataset.json, "
                             "or a folder holding one (default: the non-zero values found in the reference files)")
    parser.add_argument("-o", "--output", default=None, help="summary file (default: PREDS/summary.json)")
    parser.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE_MM, metavar="MM",
                        help=f"NSD tolerance in mm (default {DEFAULT_TOLERANCE_MM})")
    parser.add_argument("--overlays", action="store_true",
                        help="also draw overlays/CASE.png per case, beside the summary file")
    parser.add_argument("--images", default=None, metavar="FOLDER",
                        help="images to draw the overlays on (CASE.nii.gz or CASE_0000.nii.gz; default: blank)")
    parser.add_argument("-np", "--num_processes", type=POSITIVE_INT, default=2, help="worker processes (default 2)")
    add_root_arguments(parser, "raw")
    add_verbosity(parser)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    def body(args):
        labels = labels_from_dataset(args.dataset, args.raw_root) if args.dataset is not None else None
        output = Path(args.output) if args.output is not None else Path(args.prediction) / SUMMARY_NAME
        evaluate_folder(args.reference, args.prediction, labels, output, args.num_processes, args.tolerance,
                        args.overlays, args.images)
    return run_cli(body, build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
