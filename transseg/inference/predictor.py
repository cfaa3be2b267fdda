"""Prediction of whole cases from files: a loop over :class:`in_memory.Predictor`.

Each case: preprocess -> every fold's windows (``Predictor.predict_preprocessed``) -> back to the
scan's own geometry (``case.export_case``, which writes ``case.final_labels``). Three kinds of work
overlap: ``num_preprocess`` worker processes read and preprocess the next cases (preprocessing's
own ``preprocess_case``), the main thread runs the networks (and, streaming, turns each chunk of
slices into classes: see ``case``), and ``num_export`` threads (0: the main thread, between cases)
restore and write finished cases (preprocessing's own inverse). Queues are bounded, so at most a
few cases are in memory at once. Each output appears complete or not at all; a failing case is
reported by name while the others finish.
"""
from __future__ import annotations

import logging
import multiprocessing
import time
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from tqdm import tqdm

from ..dataset import CaseFiles
from ..files import remove_stale_temporaries
from ..parallel import describe_failure
from ..paths import TranssegError
from .case import export_case
from .in_memory import Predictor
from .inputs import output_name, preprocess_input

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PredictionSettings:
    tta: bool = False                  # tta, batch_size, precision, tta_slice_flip, tile_weighting: the Predictor's
    save_probabilities: bool = False
    num_preprocess: Optional[int] = None   # background processes preprocessing cases ahead (0: inline)
    num_export: Optional[int] = None       # background threads writing predictions
    resume: bool = False               # skip cases whose output exists already
    batch_size: Optional[int] = None   # windows per forward pass (default: inference.batch.default_batch_size)
    precision: str = "auto"            # the network's number format: auto (bf16 where native), fp32 or bf16
    tta_slice_flip: bool = False       # with tta: also reverse the window (8 flips instead of 4)
    tile_weighting: str = "gaussian"   # overlapping tiles of large slices: 'gaussian' or 'uniform'
    compile: bool = False              # torch.compile the networks (minutes of warm-up)
    postprocessing: bool = True        # apply the model folder's postprocessing.json, when it has one


def background_workers(settings: PredictionSettings, device: torch.device) -> tuple[int, int]:
    """(preprocessing processes, export threads): 2 and 2 beside a GPU, which they keep fed; on a CPU, where
    the network already keeps every core busy, 0 and 1 (on 2 cores: the same time within noise, 0.3 GiB less)."""
    default = (2, 2) if device.type == "cuda" else (0, 1)
    preprocess = default[0] if settings.num_preprocess is None else settings.num_preprocess
    export = default[1] if settings.num_export is None else settings.num_export
    return preprocess, export


def _done_now(function, *args) -> Future:
    """``function(*args)`` run here and now, as a finished Future (export without a background thread)."""
    future: Future = Future()
    try:
        future.set_result(function(*args))
    except Exception as error:   # noqa: BLE001 -- reported per case, like a background export's failure
        future.set_exception(error)
    return future


@dataclass
class PredictionReport:
    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0               # from the first case read to the last output written


class _CasePreprocessing:
    """The cases, preprocessed ``workers`` ahead in spawned processes, delivered in order.

    If the pool breaks before delivering anything (a script that spawned processes cannot
    re-import, say), every case is preprocessed in this process instead; if it breaks later, a
    worker died on the case in hand (often for lack of memory): that case is reported lost and the
    rest are preprocessed here. Cases not yet started are preprocessed only when their turn comes.
    """

    def __init__(self, cases: list[CaseFiles], plan, workers: int):
        self.plan, self.waiting, self.pending = plan, deque(cases), deque()
        self.depth, self.delivered = max(1, workers) + 1, 0
        self.pool = (ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
                     if workers > 0 and len(cases) > 1 else None)

    def _fill(self) -> None:
        while self.waiting and len(self.pending) < self.depth:
            case, future = self.waiting.popleft(), None
            if self.pool is not None:
                try:
                    future = self.pool.submit(preprocess_input, case, self.plan)
                except BrokenProcessPool as error:
                    self._without_pool(error)
            self.pending.append((case, future))

    def _without_pool(self, error: BaseException) -> None:
        logger.warning("background preprocessing stopped (%s); the remaining cases are preprocessed in this "
                       "process", error or type(error).__name__)
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.pool = None
        self.pending = deque((case, None) for case, _ in self.pending)

    def _result(self, case: CaseFiles, future: Optional[Future]) -> tuple[np.ndarray, dict]:
        if future is None:
            return preprocess_input(case, self.plan)
        try:
            return future.result()
        except BrokenProcessPool as error:
            blamed = self.delivered > 0
            self._without_pool(error)
            if blamed:
                raise TranssegError("lost: the preprocessing process died on this case (often for lack of "
                                    "memory; try -npp 0 or a machine with more memory)") from None
            return preprocess_input(case, self.plan)

    def __iter__(self):
        """(case, (data, properties) or None, error or None) per case, in order."""
        self._fill()
        while self.pending:
            case, future = self.pending.popleft()
            try:
                outcome = (case, self._result(case, future), None)
                self.delivered += 1
            except Exception as error:
                outcome = (case, None, error)
            self._fill()
            yield outcome

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)


def predict_cases(predictor: Predictor, cases: list[CaseFiles], output: Path,
                  settings: PredictionSettings = PredictionSettings()) -> PredictionReport:
    """Predict ``cases`` with ``predictor`` into ``output``; see the module text for the flow.

    Of ``settings`` this loop uses save_probabilities, resume and the worker counts; the predictor
    carries the folds, device, batch, precision and TTA."""
    start = time.perf_counter()
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
    num_preprocess, num_export = background_workers(settings, predictor.device)
    preprocessing = _CasePreprocessing(todo, predictor.model.plans.data, num_preprocess)
    exporters = ThreadPoolExecutor(num_export) if num_export else None
    submit_export = exporters.submit if exporters else _done_now
    pending_exports: deque[tuple[CaseFiles, Future]] = deque()
    overall = tqdm(total=len(todo), desc="predicting", unit="case", disable=not todo)

    def failed(case: CaseFiles, error: BaseException) -> None:
        report.failed[case.identifier] = describe_failure(error)
        logger.error("%s: %s", case.identifier, report.failed[case.identifier])

    def collect_export(case: CaseFiles, future: Future) -> None:
        try:
            future.result()
            report.written.append(case.identifier)
        except Exception as error:
            failed(case, error)
        overall.update()

    try:
        for case, preprocessed, error in preprocessing:
            if error is not None:
                failed(case, error)
                overall.update()
                continue
            data, properties = preprocessed
            del preprocessed
            try:
                slices = tqdm(total=data.shape[1], desc=case.identifier, unit="slice", leave=False)
                prediction = predictor.predict_preprocessed(data, properties, settings.save_probabilities,
                                                            progress=slices)
                slices.close()
                del data
            except Exception as problem:
                failed(case, problem)
                overall.update()
                continue
            while len(pending_exports) >= max(1, num_export):
                collect_export(*pending_exports.popleft())
            pending_exports.append((case, submit_export(export_case, prediction, output / output_name(case),
                                                           settings.save_probabilities)))
        while pending_exports:
            collect_export(*pending_exports.popleft())
    finally:
        preprocessing.close()
        if exporters:
            exporters.shutdown(wait=True)
        overall.close()
    report.seconds = time.perf_counter() - start
    return report
