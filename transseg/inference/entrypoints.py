"""``run_prediction``: what ``transseg_predict`` does, as a Python function."""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from ..devices import resolve_device
from ..paths import TranssegError, get_root
from .heap import keep_freed_memory
from .in_memory import Predictor
from .inputs import input_cases, part_of
from .predictor import PredictionReport, PredictionSettings, predict_cases
from .precision import precision_name
from .trained_model import find_model_folder
from .volume import tta_flips

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
    num_parts: int = 1                 # split the input into this many disjoint parts (GPUs, nodes) ...
    part_id: int = 0                   # ... and predict this one (0 .. num_parts - 1)


def _results_root(override: Optional[str]) -> Optional[Path]:
    try:
        return get_root("results", override)
    except TranssegError:
        return None


def run_prediction(options: PredictOptions) -> PredictionReport:
    """Predict every case of ``options.input`` (of part ``part_id``); raises (after the others finished) if any
    case failed. ``model_folder`` may be an exported model zip (verified, then loaded from a temporary folder)."""
    if not 0 <= options.part_id < options.num_parts:
        raise TranssegError(f"--part_id {options.part_id} is not one of 0 .. {options.num_parts - 1} "
                            f"(--num_parts {options.num_parts}).")
    if options.model_folder:
        folder = Path(options.model_folder)
    else:
        folder = find_model_folder(_results_root(options.results_root), options.dataset, options.plans_name,
                                   working_folder=Path(os.getcwd()))
    device = resolve_device(options.device)
    if device.type == "cpu":
        keep_freed_memory()                    # each forward pass reuses the last one's pages (see heap)
    settings = options.settings
    start = time.perf_counter()
    predictor = Predictor.from_model_folder(folder, options.folds, options.checkpoint, device, tta=settings.tta,
                                            precision=settings.precision, batch_size=settings.batch_size,
                                            postprocessing=settings.postprocessing, compile=settings.compile,
                                            tta_slice_flip=settings.tta_slice_flip,
                                            tile_weighting=settings.tile_weighting)
    model, rules = predictor.model, predictor.postprocessing
    if rules is not None:
        logger.info("Post-processing from %s: %s.", folder, "none chosen" if rules.is_identity else
                    ", ".join(["largest foreground component"] * rules.largest_foreground_component
                              + [f"largest component of label {v}" for v in rules.largest_component_labels]))
    logger.info("Model %s: fold(s) %s, checkpoint_%s (steps %s), on %s, %s, batch %d%s; loaded in %.1f s.", folder,
                ", ".join(f.fold for f in model.folds), options.checkpoint,
                ", ".join(str(f.step) for f in model.folds), device, precision_name(predictor.settings.autocast),
                predictor.settings.batch_size, f", with {len(tta_flips(predictor.settings))} test-time flips"
                if settings.tta else "", time.perf_counter() - start)
    cases = input_cases(Path(options.input), model.num_channels)
    if options.num_parts > 1:
        everything = len(cases)
        cases = part_of(cases, options.num_parts, options.part_id)
        logger.info("Part %d of %d: %d of the %d case(s).", options.part_id, options.num_parts, len(cases), everything)
    logger.info("%d case(s) from %s -> %s", len(cases), options.input, options.output)
    report = predict_cases(predictor, cases, Path(options.output), settings)
    logger.info("Predicted %d case(s), skipped %d, failed %d, in %.2f s.", len(report.written), len(report.skipped),
                len(report.failed), report.seconds)
    if report.failed:
        lines = "\n".join(f"  {name}: {error}" for name, error in report.failed.items())
        raise TranssegError(f"prediction failed for {len(report.failed)} of {len(cases)} case(s):\n{lines}")
    return report
