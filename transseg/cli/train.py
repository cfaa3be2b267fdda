"""transseg_train 3 fold0: train one fold of the inflated ViT + UPerNet on a preprocessed dataset."""
from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

from .common import add_root_arguments, add_verbosity, run_cli


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="transseg_train",
        description="Train one fold. Every hyper-parameter comes from plans.json; the flags below and "
                    "--set override them for this run. Under torchrun each process trains its rank.")
    parser.add_argument("dataset", help="dataset id: 3, Task03_Liver or Dataset003_Liver")
    parser.add_argument("fold", help="fold0..fold4, 0..4, or all (train on every case, no validation)")
    parser.add_argument("--plans_name", default="plans", help="which plans to follow (default: plans)")
    parser.add_argument("--device", default="auto", choices=("auto", "cuda", "cpu"),
                        help="auto: CUDA when available (default)")
    parser.add_argument("--num_gpus", type=int, default=1,
                        help="processes to start on this machine, one per GPU (on --device cpu: gloo processes)")
    parser.add_argument("--steps", type=int, help="optimiser steps (training.steps)")
    parser.add_argument("--batch_size", type=int, help="global batch in windows (training.global_batch_size)")
    parser.add_argument("--lr", type=float, help="peak learning rate (training.learning_rate)")
    parser.add_argument("--val_every", type=int, help="steps between validations (training.val_every)")
    parser.add_argument("--save_every", type=int, help="steps between checkpoint_latest.pt (training.save_every)")
    parser.add_argument("--seed", type=int, help="sampling and initialisation seed (training.seed)")
    parser.add_argument("--pretrained_file", help="local pre-trained weights (.pth/.bin/.safetensors)")
    parser.add_argument("--no_pretrained", action="store_true", help="random initialisation (the paper's 'w/o T')")
    parser.add_argument("--c", "--continue", dest="resume", action="store_true",
                        help="continue from checkpoint_latest.pt")
    parser.add_argument("--overwrite", action="store_true", help="start afresh over an existing run of this fold")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                        help="override any plans field for this run, e.g. --set training.augmentation.zoom_range="
                             "[0.8,1.25] (repeatable; VALUE is JSON or a string)")
    parser.add_argument("--no_final_validation", action="store_true",
                        help="skip predicting the validation cases in their original geometry at the end")
    parser.add_argument("--val", dest="validation_only", action="store_true",
                        help="do not train: predict and score the fold's validation cases from its checkpoint "
                             "(redo a final validation that was cut short)")
    parser.add_argument("-chk", "--checkpoint", default="final", choices=("final", "best"),
                        help="the checkpoint --val uses (default: final)")
    parser.add_argument("--npz", dest="save_probabilities", action="store_true",
                        help="the final validation (and --val) also keeps each case's probabilities, "
                             "validation/CASE.npz, for choosing configurations and post-processing")
    add_root_arguments(parser, "raw", "preprocessed", "results")
    add_verbosity(parser)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)

    def body(args: argparse.Namespace) -> None:
        from ..paths import TranssegError
        from ..training.distributed import launch_local, relaunch_command

        if args.num_gpus < 1:
            raise TranssegError(f"--num_gpus must be at least 1, got {args.num_gpus}.")
        if args.num_gpus > 1 and "WORLD_SIZE" not in os.environ:
            status = launch_local(args.num_gpus, relaunch_command(argv))
            if status:
                raise TranssegError(f"a training process exited with status {status} (its message is above).")
            return
        from ..training.config import TrainOptions
        from ..training.entrypoints import run_training

        run_training(TrainOptions(
            dataset=args.dataset, fold=args.fold, plans_name=args.plans_name, device=args.device, steps=args.steps,
            batch_size=args.batch_size, learning_rate=args.lr, val_every=args.val_every, save_every=args.save_every,
            seed=args.seed, pretrained_file=args.pretrained_file, no_pretrained=args.no_pretrained,
            resume=args.resume, overwrite=args.overwrite, overrides=args.overrides,
            final_validation=not args.no_final_validation, validation_only=args.validation_only,
            checkpoint=args.checkpoint, save_probabilities=args.save_probabilities, raw_root=args.raw_root,
            preprocessed_root=args.preprocessed_root, results_root=args.results_root))

    return run_cli(body, build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
