"""transseg_export_model -m MODEL_FOLDER -o model.zip: one file with everything needed to predict."""
from __future__ import annotations

import argparse
from typing import Optional, Sequence

from .common import add_verbosity, run_cli


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="transseg_export_model",
        description="Write a trained model as one zip: plans.json, dataset.json, the chosen folds' checkpoints and a "
                    "manifest (TransSeg version, folds, sha256 of every member). Install it elsewhere with "
                    "transseg_install_model, or predict with it directly: transseg_predict -m model.zip.")
    parser.add_argument("-m", "--model_folder", required=True,
                        help="the trained model folder, <results>/DatasetXXX_Name/<plans>")
    parser.add_argument("-o", "--output", required=True, help="the zip file to write")
    parser.add_argument("-f", "--folds", nargs="+", help="folds to include (default: every fold with the checkpoint)")
    parser.add_argument("-chk", "--checkpoint", default="final", choices=("final", "best", "latest"),
                        help="which checkpoint of each fold (default: final)")
    add_verbosity(parser)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    def body(args: argparse.Namespace) -> None:
        from ..model_export import export_model
        export_model(args.model_folder, args.output, args.folds, args.checkpoint)

    return run_cli(body, build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
