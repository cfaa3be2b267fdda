"""The whole pipeline on the embedded example task, on a CPU, in a few minutes: ``transseg_demo``.

Writes the synthetic MSD task (CT-like, organ and lesion) into ``folder/raw``, then runs the same
Python functions as the four commands: plan and preprocess (ViT-Tiny, small input), train fold 0
(random initialisation: nothing is downloaded), predict imagesTs, evaluate against labelsTs with
overlay pictures. Everything stays inside ``folder``; the environment is not touched.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from .evaluation import evaluate_folder
from .example import LABELS, ExampleSettings, make_example_task
from .inference.entrypoints import PredictOptions, run_prediction
from .inference.predictor import PredictionSettings
from .planning.entrypoints import run_extract_fingerprint, run_plan_experiment
from .planning.planner import PlannerOptions
from .preprocessing import run_preprocess
from .training.config import TrainOptions
from .training.entrypoints import run_training

logger = logging.getLogger(__name__)
DEMO_TASK = 99


@dataclass(frozen=True)
class DemoSettings:
    steps: int = 300
    batch_size: int = 4
    learning_rate: float = 1e-3            # random initialisation learns faster than the paper's fine-tuning rate
    training_cases: int = 8
    test_cases: int = 4
    backbone: str = "vit_tiny_patch16_224"
    min_resolution: int = 64
    device: str = "cpu"


@dataclass(frozen=True)
class DemoResult:
    folder: Path
    plans: Path
    progress: Path
    predictions: Path
    summary: Path
    overlays: Path
    foreground_dice: float
    seconds: float


def run_demo(folder: Path, settings: DemoSettings = DemoSettings()) -> DemoResult:
    started = time.perf_counter()
    folder = Path(folder).resolve()
    roots = {kind: folder / kind for kind in ("raw", "preprocessed", "results")}
    task = make_example_task(roots["raw"], ExampleSettings(task_id=DEMO_TASK, num_training=settings.training_cases,
                                                           num_test=settings.test_cases))
    logger.info("1/4 example task written to %s", task)
    raw, preprocessed, results = (str(roots[k]) for k in ("raw", "preprocessed", "results"))
    run_extract_fingerprint(DEMO_TASK, raw, preprocessed, num_processes=2, verify=True, clean=True)
    plans = run_plan_experiment(DEMO_TASK, raw, preprocessed,
                                PlannerOptions(backbone=settings.backbone, pretrained=None,
                                               min_resolution=settings.min_resolution))
    run_preprocess(DEMO_TASK, raw, preprocessed, num_processes=2, overwrite=True)
    logger.info("2/4 planned and preprocessed: %s", plans)
    fold_folder = run_training(TrainOptions(
        dataset=str(DEMO_TASK), fold=0, device=settings.device, steps=settings.steps, batch_size=settings.batch_size,
        learning_rate=settings.learning_rate, val_every=max(1, settings.steps // 5), no_pretrained=True,
        overwrite=True, overrides=["training.loader_workers=1"], raw_root=raw, preprocessed_root=preprocessed,
        results_root=results))
    logger.info("3/4 trained fold 0: %s", fold_folder)
    predictions = folder / "predictions"
    run_prediction(PredictOptions(input=str(task / "imagesTs"), output=str(predictions),
                                  model_folder=str(fold_folder.parent),
                                  device=settings.device, settings=PredictionSettings()))
    summary_file = predictions / "summary.json"
    summary = evaluate_folder(task / "labelsTs", predictions, {int(k): v for k, v in LABELS.items()}, summary_file,
                              overlays=True, image_folder=task / "imagesTs")
    logger.info("4/4 predicted and evaluated the test cases")
    return DemoResult(folder, plans, fold_folder / "progress.png", predictions, summary_file,
                      predictions / "overlays", float(summary["foreground_mean"]["dice"]),
                      time.perf_counter() - started)
