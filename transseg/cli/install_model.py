"""transseg_install_model model.zip: unpack an exported model into the results root, after checking it."""
from __future__ import annotations

import argparse
from typing import Optional, Sequence

from .common import add_root_arguments, add_verbosity, run_cli


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="transseg_install_model",
        description="Install a model zip written by transseg_export_model as <results>/DatasetXXX_Name/<plans>. "
                    "Every member is checked first (path inside the folder, size and sha256 as in the manifest, "
                    "checkpoints loadable with weights_only=True); a refused zip installs nothing.")
    parser.add_argument("zip", help="the exported model (.zip)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a model installed under the same dataset and plans name")
    add_root_arguments(parser, "results")
    add_verbosity(parser)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    def body(args: argparse.Namespace) -> None:
        from ..model_export import install_model
        from ..paths import get_root
        install_model(args.zip, get_root("results", args.results_root), overwrite=args.overwrite)

    return run_cli(body, build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
