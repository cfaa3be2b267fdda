"""One preprocessed case through the networks and back into a file in the scan's own geometry.

Streaming (the default): each chunk of slices' probabilities is turned into classes of the cropped
grid as soon as it is computed (``streaming.ClassMapStream``: in-plane resampling, and the slice
axis too when the plan resampled it), so only a class map (one byte per voxel of the cropped scan)
is kept, whatever the number of classes: a 1000-slice whole-body CT with 100 classes never holds a
probability volume. The probabilities pass through float16 first, so the result is identical to
restoring the full float16 probabilities, which are kept only for ``--save_probabilities``. On a
GPU, a worker thread does that CPU work for one chunk while the network runs the next.
"""
from __future__ import annotations

import json
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from ..dataset import strip_suffix
from ..postprocessing import PostprocessingRules
from ..preprocessing import restore_cropped_classes, restore_segmentation, write_npz, write_restored
from .streaming import ClassMapStream
from .volume import InferenceSettings, VolumeModel, predict_chunks, predict_probabilities


@dataclass
class CasePrediction:
    """A case's result: a class map on the cropped grid (streamed), or probabilities on the preprocessed grid."""

    properties: dict
    classes: Optional[np.ndarray] = None
    probabilities: Optional[np.ndarray] = None
    postprocessing: Optional[PostprocessingRules] = None    # the model folder's postprocessing.json, if applied


def stream_classes(models: Sequence[VolumeModel], data: np.ndarray, properties: dict, device: torch.device,
                   settings: InferenceSettings, progress=None, background: Optional[bool] = None) -> np.ndarray:
    """The arg-max class map on the cropped grid, built chunk by chunk as the slices are predicted.

    ``background`` (default: on a GPU) hands each chunk's resampling and arg-max to a worker thread, so
    the network is not kept waiting; on a CPU the network already keeps every core busy.
    """
    background = device.type == "cuda" if background is None else background
    stream: Optional[ClassMapStream] = None
    worker = ThreadPoolExecutor(1) if background else None
    pending: Optional[Future] = None
    try:
        for z0, z1, probabilities in predict_chunks(models, data, device, settings, progress):
            scores = probabilities.to(torch.float16).cpu().numpy()
            if stream is None:
                stream = ClassMapStream(properties["shape_before_resampling"], data.shape[1], scores.shape[0])
            if worker is None:
                stream.add(z0, z1, scores)
                continue
            if pending is not None:
                pending.result()            # one chunk in flight: chunks are added in order, memory stays bounded
            pending = worker.submit(stream.add, z0, z1, scores)
        if pending is not None:
            pending.result()
    finally:
        if worker is not None:
            worker.shutdown(wait=True)
    return stream.result()


def predict_case(models: Sequence[VolumeModel], data: np.ndarray, properties: dict, device: torch.device,
                 settings: InferenceSettings, keep_probabilities: bool = False, progress=None) -> CasePrediction:
    """Stream the case into a class map, or keep its float16 probabilities (for ``--save_probabilities``)."""
    if not keep_probabilities:
        return CasePrediction(properties, classes=stream_classes(models, data, properties, device, settings, progress))
    return CasePrediction(properties, probabilities=predict_probabilities(models, data, device, settings,
                                                                          progress=progress))


def final_labels(prediction: CasePrediction) -> np.ndarray:
    """The case's label values (Z, Y, X) on the scan's own grid: the one place where a prediction becomes
    its final label array, shared by ``transseg_predict`` (which writes it) and the Python API (which
    returns it). Anything applied to every final prediction (post-processing) belongs here."""
    if prediction.probabilities is None:
        labels = restore_cropped_classes(prediction.classes, prediction.properties)
    else:
        labels = restore_segmentation(prediction.probabilities, prediction.properties)
    return labels if prediction.postprocessing is None else prediction.postprocessing.apply(labels)


def export_case(prediction: CasePrediction, path: Path, save_probabilities: bool = False) -> Path:
    """Write the label map in the scan's geometry; with ``save_probabilities`` also CASE.npz beside it.

    CASE.npz holds ``probabilities`` (classes, Z, Y, X) float16 on the preprocessed grid and
    ``properties_json`` (the CASE.json record that ``restore_segmentation`` needs), read with
    ``np.load(allow_pickle=False)``.
    """
    properties = prediction.properties
    if save_probabilities and prediction.probabilities is not None:
        record = np.frombuffer(json.dumps(properties).encode("utf-8"), dtype=np.uint8)
        write_npz(Path(path).with_name(strip_suffix(Path(path).name) + ".npz"),
                  {"probabilities": prediction.probabilities, "properties_json": record})
    return write_restored(final_labels(prediction), properties, path)
