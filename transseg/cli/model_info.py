"""transseg_model_info --backbone beit_base_patch16_224.in22k_ft_in22k --resolution 512 --slices 1 5"""
from __future__ import annotations

import argparse
from typing import Optional, Sequence

from ..paths import TranssegError
from .common import add_verbosity, run_cli


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="transseg_model_info",
        description="Parameters and FLOPs of the inflated encoder and the whole model, one row per slice count.",
    )
    parser.add_argument("--backbone", default="beit_base_patch16_224.in22k_ft_in22k", help="timm model name")
    parser.add_argument("--resolution", type=int, nargs="+", default=[512],
                        help="in-plane size: one value (square) or H W (default 512)")
    parser.add_argument("--slices", type=int, nargs="+", default=[1, 5], help="slice counts K, one row each")
    parser.add_argument("--decoder_channels", type=int, default=768, help="UPerNet width (default 768)")
    parser.add_argument("--num_classes", type=int, default=2, help="output classes (default 2)")
    parser.add_argument("--in_channels", type=int, default=1, help="image channels (default 1)")
    add_verbosity(parser)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    def body(args: argparse.Namespace) -> None:
        import timm

        from ..model.flops import format_table, model_info

        if len(args.resolution) not in (1, 2):
            raise TranssegError(f"--resolution takes one value or H W, got {args.resolution}")
        if not timm.is_model(args.backbone):
            raise TranssegError(f"unknown timm backbone {args.backbone!r}")
        resolution = tuple(args.resolution) * (3 - len(args.resolution))
        try:
            rows = model_info(args.backbone, resolution, args.slices, args.decoder_channels,
                              args.num_classes, args.in_channels)
        except ValueError as error:  # invalid configuration (size not a patch multiple, even K, ...)
            raise TranssegError(str(error)) from error
        print(f"{args.backbone} at {resolution[0]}x{resolution[1]}, decoder width {args.decoder_channels}, "
              f"{args.num_classes} classes, {args.in_channels} channel(s)")
        print(format_table(rows))

    return run_cli(body, build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
