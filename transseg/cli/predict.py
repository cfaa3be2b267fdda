"""transseg_predict -i imagesTs -o preds: segment scans with a trained model, in each scan's own geometry."""
from __future__ import annotations

import argparse
from typing import Optional, Sequence

from .common import (NON_NEGATIVE_INT, POSITIVE_INT, add_root_arguments, add_verbosity, exit_without_teardown,
                     run_cli)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="transseg_predict",
        description="Predict a folder of images (MSD files or nnU-Net _0000 channel files) or one image. Without "
                    "-d or -m, the dataset comes from the dataset.json of the folder this runs in, or from the "
                    "results root when it holds one trained model.")
    parser.add_argument("-i", "--input", required=True, help="folder of images, or one image file")
    parser.add_argument("-o", "--output", required=True, help="folder for the predictions")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("-d", "--dataset", help="dataset id or name (its model is looked up in the results root)")
    source.add_argument("-m", "--model_folder",
                        help="a trained model folder, <results>/DatasetXXX_Name/<plans>, or an exported model .zip "
                             "(transseg_export_model; verified, then used without installing)")
    parser.add_argument("-f", "--folds", nargs="+", help="folds to ensemble (default: every trained fold)")
    parser.add_argument("-chk", "--checkpoint", default="final", choices=("final", "best", "latest"),
                        help="which checkpoint of each fold (default: final)")
    parser.add_argument("--plans_name", default="plans", help="plans the model was trained with (default: plans)")
    parser.add_argument("--save_probabilities", action="store_true",
                        help="also write CASE.npz: probabilities on the preprocessed grid and how to restore them")
    parser.add_argument("--tta", action="store_true",
                        help="test-time augmentation: average over the four in-plane mirrorings")
    parser.add_argument("--tta_slice_flip", action="store_true",
                        help="with --tta, each mirroring also with the slice window reversed (8 passes; +0.001 Dice "
                             "on the example task, twice the time)")
    parser.add_argument("--tile_weighting", default="gaussian", choices=("gaussian", "uniform"),
                        help="how overlapping tiles of slices larger than the input are averaged: gaussian (default; "
                             "tile centres count most) or uniform")
    parser.add_argument("--device", default="auto", choices=("auto", "cuda", "cpu"),
                        help="auto: CUDA when available (default)")
    parser.add_argument("-npp", "--num_preprocess", type=NON_NEGATIVE_INT, default=None,
                        help="background processes preprocessing the next cases (default: 2 with a GPU, 0 on a CPU, "
                             "whose cores the network keeps busy)")
    parser.add_argument("-nps", "--num_export", type=NON_NEGATIVE_INT, default=None,
                        help="background threads writing predictions (default: 2 with a GPU, 1 on a CPU; 0: "
                             "written by the main thread, between cases)")
    parser.add_argument("--batch_size", type=POSITIVE_INT,
                        help="windows per forward pass (default: from the memory model on a GPU, 4 on a CPU)")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"),
                        help="the network's number format: auto (default) runs bf16 on a GPU and on CPUs with native "
                             "bf16 (AVX512-BF16/AMX, about 2x faster there), fp32 elsewhere")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the network: minutes of warm-up per fold before the first case; pays only "
                             "for many cases (measured in documentation/inference.md, CPU only)")
    parser.add_argument("--continue", dest="resume", action="store_true",
                        help="skip cases whose prediction exists already")
    parser.add_argument("--no_postprocessing", action="store_true",
                        help="do not apply the model folder's postprocessing.json (transseg_find_best_configuration "
                             "writes it; applied by default when present)")
    parser.add_argument("--num_parts", type=POSITIVE_INT, default=1,
                        help="split the input into this many disjoint parts, chosen by a hash of each case name "
                             "(stable whatever the file order), e.g. one per GPU or SLURM array task (default 1)")
    parser.add_argument("--part_id", type=NON_NEGATIVE_INT, default=0,
                        help="which part this process predicts, 0 .. num_parts-1 (default 0)")
    add_root_arguments(parser, "results")
    add_verbosity(parser)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    def body(args: argparse.Namespace) -> None:
        from ..inference.entrypoints import PredictOptions, run_prediction
        from ..inference.predictor import PredictionSettings
        settings = PredictionSettings(tta=args.tta, save_probabilities=args.save_probabilities,
                                      num_preprocess=args.num_preprocess, num_export=args.num_export,
                                      resume=args.resume, batch_size=args.batch_size,
                                      precision=args.precision, tta_slice_flip=args.tta_slice_flip,
                                      tile_weighting=args.tile_weighting, compile=args.compile,
                                      postprocessing=not args.no_postprocessing)
        run_prediction(PredictOptions(input=args.input, output=args.output, dataset=args.dataset,
                                      model_folder=args.model_folder, folds=args.folds, checkpoint=args.checkpoint,
                                      plans_name=args.plans_name, device=args.device, settings=settings,
                                      results_root=args.results_root, num_parts=args.num_parts,
                                      part_id=args.part_id))

    return run_cli(body, build_parser(), argv, imports=["transseg.inference.entrypoints"])


console = exit_without_teardown(main)      # the transseg_predict script

if __name__ == "__main__":
    console()
