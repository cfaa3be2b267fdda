"""transseg_plan_experiment -d 3"""
from __future__ import annotations

import argparse
from typing import Optional, Sequence

from ..planning.entrypoints import run_plan_experiment
from ..planning.planner import OPTIONS_SCHEMA, PlannerOptions, check_options
from ..planning.plans import INFLATIONS, PLANS_SCHEMA_RULES, Plans
from ..planning.schema import argparse_type
from .common import add_dataset_arguments, add_root_arguments, add_verbosity, run_cli


def _option_type(kind: type, option: str):
    """The flag's argparse type: the same rule that checks the planner option (and the plans field)."""
    rules = OPTIONS_SCHEMA.rules[PlannerOptions] if option != "plans_name" else PLANS_SCHEMA_RULES[Plans]
    return argparse_type(kind, rules[option])


def add_planner_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = PlannerOptions()
    parser.add_argument("--backbone", default=defaults.backbone, help="timm model name")
    parser.add_argument("--pretrained_file", default=None,
                        help="local pre-trained weights (.pth/.bin/.safetensors) for offline machines")
    parser.add_argument("--no_pretrained", action="store_true", help="random initialisation ('w/o T')")
    parser.add_argument("--ct_clip", choices=("foreground", "paper"), default=defaults.ct_clip,
                        help="CT clip window: foreground 0.5/99.5 percentiles, or the paper's [-175, 250]")
    parser.add_argument("--slices", type=_option_type(int, "window_slices"), default=defaults.window_slices,
                        help="window size K, odd (default 5; 1 is the paper's 2D transfer)")
    parser.add_argument("--inflation", choices=INFLATIONS, default=defaults.inflation,
                        help="how the 2D patch kernel becomes 3D: center (default), average, none (random)")
    parser.add_argument("--plans_name", type=_option_type(str, "plans_name"), default="plans",
                        help="name of the plans file and configuration (default: plans); a variant such as plans_k1 "
                             "shares the preprocessed cases of the plans whose data fields it matches")
    parser.add_argument("--decoder_channels", type=_option_type(int, "decoder_channels"), default=None,
                        help="UPerNet width")
    parser.add_argument("-gpu_memory_target", "--gpu_memory_target", type=_option_type(float, "gpu_memory_target_gb"),
                        default=defaults.gpu_memory_target_gb, help="GPU memory to plan for, GB")
    parser.add_argument("--min_resolution", type=_option_type(int, "min_resolution"),
                        default=defaults.min_resolution, help="smallest in-plane input side (default 224)")


def planner_options(args: argparse.Namespace) -> PlannerOptions:
    """The options from the flags, checked (backbone against timm's registry) before any work starts."""
    options = PlannerOptions(
        backbone=args.backbone, pretrained=None if args.no_pretrained else "timm",
        pretrained_file=args.pretrained_file, ct_clip=args.ct_clip, window_slices=args.slices, inflation=args.inflation,
        decoder_channels=args.decoder_channels, gpu_memory_target_gb=args.gpu_memory_target,
        min_resolution=args.min_resolution,
    )
    check_options(options)
    return options


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="transseg_plan_experiment",
                                     description="Write plans.json from the dataset fingerprint.")
    add_dataset_arguments(parser, num_processes=False)
    add_planner_arguments(parser)
    add_root_arguments(parser, "raw", "preprocessed")
    add_verbosity(parser)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    def body(args):
        options = planner_options(args)
        for dataset in args.dataset:
            run_plan_experiment(dataset, args.raw_root, args.preprocessed_root, options, args.plans_name)
    return run_cli(body, build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
