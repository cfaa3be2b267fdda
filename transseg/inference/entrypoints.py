"""``run_prediction``: what ``transseg_predict`` does, as a Python function."""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from ..devices import resolve_device
from ..paths import TranssegError, get_root
from .inputs import input_cases
from .predictor import PredictionReport, PredictionSettings, predict_cases
from .trained_model import find_model_folder, load_trained_model

logger = logging.getLogger(__name__)


@dataclass
class PredictOptions:
    input: str
    output: str
    dataset: Optional[str] = None
    model_folder: Optional[str] = None
    folds: Optional[Sequence[str]] = None
    checkpoint: str = "final"
    plans_name: str = "plans"
    device: str = "auto"
    settings: PredictionSettings = PredictionSettings()
    results_root: Optional[str] = None


def _results_root(override: Optional[str]) -> Optional[Path]:
    try:
        return get_root("results", override)
    except TranssegError:
        return None


def run_prediction(options: PredictOptions) -> PredictionReport:
    """Predict every case of ``options.input``; raises (after the others finished) if any case failed."""
    if options.model_folder:
        folder = Path(options.model_folder)
    else:
        folder = find_model_folder(_results_root(options.results_root), options.dataset, options.plans_name,
                                   working_folder=Path(os.getcwd()))
    device = resolve_device(options.device)
    model = load_trained_model(folder, options.folds, options.checkpoint, device)
    logger.info("Model %s: fold(s) %s, checkpoint_%s (steps %s), on %s%s.", folder,
                ", ".join(f.fold for f in model.folds), options.checkpoint,
                ", ".join(str(f.step) for f in model.folds), device, ", with test-time flips" if options.settings.tta else "")
    cases = input_cases(Path(options.input), model.num_channels)
    logger.info("%d case(s) from %s -> %s", len(cases), options.input, options.output)
    report = predict_cases(model, cases, Path(options.output), device, options.settings)
    logger.info("Predicted %d case(s), skipped %d, failed %d.", len(report.written), len(report.skipped),
                len(report.failed))
    if report.failed:
        lines = "\n".join(f"  {name}: {error}" for name, error in report.failed.items())
        raise TranssegError(f"prediction failed for {len(report.failed)} of {len(cases)} case(s):\n{lines}")
    return report
