"""Prediction of whole cases: preprocess -> every fold's windows -> back to each scan's own geometry.

Three kinds of work overlap: ``num_preprocess`` worker processes read and preprocess the next
cases (preprocessing's own ``preprocess_case``), the main thread runs the networks, and
``num_export`` threads resample, arg-max and write finished cases (preprocessing's own
``export_segmentation``). Queues are bounded, so at most a few cases are in memory at once. Each
output appears complete or not at all; a failing case is reported by name while the others finish.

Memory: the probabilities of one case are held as float16 on the preprocessed grid (classes x
slices x rows x columns x 2 bytes) while it is exported; export resamples one class at a time.
"""
from __future__ import annotations

import json
import logging
import multiprocessing
import traceback
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from tqdm import tqdm

from ..dataset import CaseFiles, strip_suffix
from ..files import remove_stale_temporaries
from ..paths import TranssegError
from ..preprocessing import export_segmentation, write_npz
from .inputs import output_name, preprocess_input
from .trained_model import TrainedModel
from .volume import InferenceSettings, predict_probabilities

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PredictionSettings:
    tta: bool = False
    save_probabilities: bool = False
    num_preprocess: int = 2            # background processes reading and preprocessing cases (0: inline)
    num_export: int = 2                # background threads writing predictions
    resume: bool = False               # skip cases whose output exists already
    batch_size: Optional[int] = None   # windows per forward pass (default: the training batch per GPU)


@dataclass
class PredictionReport:
    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def export_prediction(probabilities: np.ndarray, properties: dict, path: Path, save_probabilities: bool) -> Path:
    """Write the label map in the scan's geometry; with ``save_probabilities`` also CASE.npz beside it.

    CASE.npz holds ``probabilities`` (classes, Z, Y, X) float16 on the preprocessed grid and
    ``properties_json`` (the CASE.json record that ``restore_segmentation`` needs), read with
    ``np.load(allow_pickle=False)``.
    """
    if save_probabilities:
        record = np.frombuffer(json.dumps(properties).encode("utf-8"), dtype=np.uint8)
        write_npz(path.with_name(strip_suffix(path.name) + ".npz"), {"probabilities": probabilities, "properties_json": record})
    return export_segmentation(probabilities, properties, path)


def _describe(error: BaseException) -> str:
    if isinstance(error, TranssegError):
        return str(error)
    if isinstance(error, BrokenProcessPool):
        return "lost: a preprocessing process died (often for lack of memory; try a smaller -npp)"
    logger.debug("".join(traceback.format_exception(error)))
    return f"{type(error).__name__}: {error}"


class _InlineExecutor:
    """The executor interface, running each job at once (``-npp 0``)."""

    def submit(self, function, *args) -> Future:
        future: Future = Future()
        try:
            future.set_result(function(*args))
        except Exception as error:   # delivered to the caller through the future, like a pool would
            future.set_exception(error)
        return future

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        pass


def predict_cases(model: TrainedModel, cases: list[CaseFiles], output: Path, device: torch.device,
                  settings: PredictionSettings = PredictionSettings()) -> PredictionReport:
    """Predict ``cases`` with every loaded fold into ``output``; see the module text for the flow."""
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(output)
    report = PredictionReport()
    todo = []
    for case in cases:
        if settings.resume and (output / output_name(case)).is_file():
            report.skipped.append(case.identifier)
        else:
            todo.append(case)
    if report.skipped:
        logger.info("%d case(s) already predicted in %s; skipped (--continue).", len(report.skipped), output)
    inference = InferenceSettings(batch_size=settings.batch_size or model.plans.training.batch_size_per_gpu,
                                  tta=settings.tta, autocast=torch.bfloat16 if device.type == "cuda" else None)
    def new_pool():
        if settings.num_preprocess > 0 and len(todo) > 1:
            return ProcessPoolExecutor(settings.num_preprocess, mp_context=multiprocessing.get_context("spawn"))
        return _InlineExecutor()

    preprocessors = new_pool()
    exporters = ThreadPoolExecutor(max(1, settings.num_export))
    pending_preprocessing: deque[tuple[CaseFiles, Future]] = deque()
    pending_exports: deque[tuple[CaseFiles, Future]] = deque()
    queue = iter(todo)
    overall = tqdm(total=len(todo), desc="predicting", unit="case", disable=not todo)

    def submit_next() -> None:
        case = next(queue, None)
        if case is not None:
            pending_preprocessing.append((case, preprocessors.submit(preprocess_input, case, model.plans.data)))

    def collect_export(case: CaseFiles, future: Future) -> None:
        try:
            future.result()
            report.written.append(case.identifier)
        except Exception as error:
            report.failed[case.identifier] = _describe(error)
            logger.error("%s: %s", case.identifier, report.failed[case.identifier])
        overall.update()

    try:
        for _ in range(max(1, settings.num_preprocess) + 1):
            submit_next()
        while pending_preprocessing:
            case, future = pending_preprocessing.popleft()
            submit_next()
            try:
                data, properties = future.result()
                slices = tqdm(total=data.shape[1], desc=case.identifier, unit="slice", leave=False)
                probabilities = predict_probabilities([f.model for f in model.folds], data, device, inference,
                                                      progress=slices)
                slices.close()
                del data
            except Exception as error:
                report.failed[case.identifier] = _describe(error)
                logger.error("%s: %s", case.identifier, report.failed[case.identifier])
                overall.update()
                if isinstance(error, BrokenProcessPool):   # start a fresh pool for the cases still waiting
                    preprocessors.shutdown(wait=False, cancel_futures=True)
                    preprocessors = new_pool()
                    waiting = [c for c, _ in pending_preprocessing]
                    pending_preprocessing.clear()
                    for other in waiting:
                        pending_preprocessing.append((other, preprocessors.submit(preprocess_input, other,
                                                                                  model.plans.data)))
                continue
            while len(pending_exports) >= max(1, settings.num_export):
                collect_export(*pending_exports.popleft())
            pending_exports.append((case, exporters.submit(export_prediction, probabilities, properties,
                                                           output / output_name(case), settings.save_probabilities)))
        while pending_exports:
            collect_export(*pending_exports.popleft())
    finally:
        preprocessors.shutdown(wait=True, cancel_futures=True)
        exporters.shutdown(wait=True)
        overall.close()
    return report
