"""transseg_demo: the whole pipeline on the embedded example task, on a CPU, with nothing to download."""
from __future__ import annotations

import argparse
from typing import Optional, Sequence

from .common import add_verbosity, run_cli


def build_parser() -> argparse.ArgumentParser:
    from ..demo import DemoSettings

    defaults = DemoSettings()
    parser = argparse.ArgumentParser(
        prog="transseg_demo",
        description="Write the example MSD task into FOLDER, then plan and preprocess, train fold 0 (ViT-Tiny, random "
                    "initialisation), predict imagesTs and evaluate it; prints the Dice and where everything is.")
    parser.add_argument("folder", nargs="?", default="transseg_demo",
                        help="where the task and every result go (default: ./transseg_demo)")
    parser.add_argument("--steps", type=int, default=defaults.steps, help=f"training steps (default {defaults.steps})")
    parser.add_argument("--device", default=defaults.device, choices=("auto", "cuda", "cpu"),
                        help="the demo is sized for a CPU (default cpu)")
    add_verbosity(parser)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    def body(args: argparse.Namespace) -> None:
        from ..demo import DemoSettings, run_demo
        from ..paths import TranssegError

        if args.steps < 1:
            raise TranssegError(f"--steps must be at least 1, got {args.steps}.")
        result = run_demo(args.folder, DemoSettings(steps=args.steps, device=args.device))
        print(f"\nTransSeg demo finished in {result.seconds / 60:.1f} min.")
        print(f"  mean foreground Dice on the {len(list(result.predictions.glob('*.nii.gz')))} test cases: "
              f"{result.foreground_dice:.3f}")
        print(f"  plans:        {result.plans}")
        print(f"  training:     {result.progress}")
        print(f"  predictions:  {result.predictions}")
        print(f"  evaluation:   {result.summary}")
        print(f"  pictures:     {result.overlays}")

    return run_cli(body, build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
