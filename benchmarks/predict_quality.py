"""Inference settings measured by Dice, not assumed: tile weighting, and the slice-axis flip in TTA.

The example task, planned for vit_tiny at an input resolution *smaller* than its slices (so every
slice is covered by overlapping tiles, where weighting matters), preprocessed, fold 0 trained on
the CPU; then its test cases predicted in memory with each setting and scored in their own geometry:

- tiles averaged uniformly vs Gaussian-weighted (sigma 1/8 of the tile, nnU-Net's choice);
- no TTA, TTA with the four in-plane mirrorings, TTA with those and the window reversed (8).

    python benchmarks/predict_quality.py [--steps 300] [--resolution 32] [--test 8]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import SimpleITK as sitk

from transseg.dataset import CaseFiles
from transseg.evaluation import evaluate_folder
from transseg.example import ExampleSettings, make_example_task
from transseg.inference.in_memory import Predictor
from transseg.inference.inputs import preprocess_input

LABELS = {0: "background", 1: "organ", 2: "lesion"}


def run(command: list[str], env: dict) -> None:
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--resolution", type=int, default=32, help="input side, smaller than the ~80 x 67 slices")
    parser.add_argument("--training", type=int, default=8)
    parser.add_argument("--test", type=int, default=8)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--reuse", action="store_true", help="the work folder holds a trained model: predict only")
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="transseg_quality_"))
    roots = {kind: work / kind for kind in ("raw", "preprocessed", "results")}
    env = {**os.environ, **{f"TRANSSEG_{kind}": str(path) for kind, path in roots.items()}}
    folder = roots["results"] / "Dataset088_Quality" / "plans"
    task = roots["raw"] / "Task88_Quality"
    if not args.reuse:
        trained = train(roots, env, args)
    else:
        trained = float("nan")
    predict_all(folder, task, work, args, trained)


def train(roots: dict, env: dict, args) -> float:
    make_example_task(roots["raw"], ExampleSettings(task_id=88, name="Quality", num_training=args.training,
                                                    num_test=args.test))
    bin_folder = Path(sys.executable).parent
    run([str(bin_folder / "transseg_plan_and_preprocess"), "-d", "88", "-np", "2", "--backbone",
         "vit_tiny_patch16_224", "--min_resolution", "32", "--no_pretrained", "--no_preprocessing"], env)
    plans_file = roots["preprocessed"] / "Dataset088_Quality" / "plans.json"
    plans = json.loads(plans_file.read_text())
    plans["data"]["resolution"] = [args.resolution, args.resolution]
    plans_file.write_text(json.dumps(plans, indent=2))
    run([str(bin_folder / "transseg_preprocess"), "-d", "88", "-np", "2"], env)
    start = time.perf_counter()
    run([str(bin_folder / "transseg_train"), "88", "0", "--device", "cpu", "--steps", str(args.steps),
         "--batch_size", "4", "--lr", "1e-3", "--no_pretrained", "--set", "training.loader_workers=0"], env)
    return time.perf_counter() - start


def predict_all(folder: Path, task: Path, work: Path, args, trained: float) -> None:
    images = sorted((task / "imagesTs").glob("*.nii.gz"))
    base = Predictor.from_model_folder(folder, device="cpu", precision="fp32")
    shapes = [preprocess_input(CaseFiles(p.name, (p,)), base.model.plans.data)[1]["shape_after_resampling"][1:]
              for p in images]
    settings = {
        "uniform tiles": dict(tile_weighting="uniform"),
        "gaussian tiles": dict(tile_weighting="gaussian"),
        "gaussian, tta in-plane (4)": dict(tile_weighting="gaussian", tta=True, tta_slice_flip=False),
        "gaussian, tta + slice flip (8)": dict(tile_weighting="gaussian", tta=True, tta_slice_flip=True),
        "uniform, tta in-plane (4)": dict(tile_weighting="uniform", tta=True, tta_slice_flip=False),
        "uniform, tta + slice flip (8)": dict(tile_weighting="uniform", tta=True, tta_slice_flip=True),
    }
    print(f"example task: {args.training} training / {len(images)} test cases, slices {min(shapes)} to {max(shapes)} "
          f"px after resampling, input {base.model.plans.data.resolution}, vit_tiny, fold 0 trained {args.steps} CPU "
          f"steps ({trained:.0f} s), fp32")
    for name, change in settings.items():
        predictor = dataclasses.replace(base, settings=dataclasses.replace(base.settings, **change))
        output = work / "predictions" / name.replace(" ", "_").replace(",", "").replace("(", "").replace(")", "")
        output.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        for image in images:
            sitk.WriteImage(predictor.predict_image(sitk.ReadImage(str(image))), str(output / image.name))
        seconds = time.perf_counter() - start
        summary = evaluate_folder(task / "labelsTs", output, LABELS)
        per_class = {k: round(v["dice"], 4) for k, v in summary.get("mean", {}).items()
                     if isinstance(v, dict) and "dice" in v and not k.startswith("0")}
        print(f"{name:32s}: mean foreground Dice {summary['foreground_mean']['dice']:.4f} {per_class} "
              f"({seconds:.1f} s)")
    print(f"work folder: {work}")


if __name__ == "__main__":
    main()
