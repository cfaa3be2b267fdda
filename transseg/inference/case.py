"""One preprocessed case through the networks and back into a file in the scan's own geometry.

Streaming: when the plan did not resample the slice axis (the usual case), each chunk of slices'
probabilities is resampled in-plane and arg-maxed as soon as it is computed, so only a class map
(one byte per voxel of the cropped scan) is kept, whatever the number of classes: a 1000-slice
whole-body CT never holds a probability volume. The probabilities pass through float16 first, so
the result is identical to restoring the full float16 probabilities (what ``--save_probabilities``
keeps, and what a resampled slice axis needs, since slices then mix).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from ..dataset import strip_suffix
from ..preprocessing import export_segmentation, restore_cropped_classes, write_npz, write_restored
from ..preprocessing.preprocessor import smallest_unsigned
from ..preprocessing.resampling import argmax_of_resampled
from .volume import InferenceSettings, VolumeModel, predict_chunks, predict_probabilities


@dataclass
class CasePrediction:
    """A case's result: a class map on the cropped grid (streamed), or probabilities on the preprocessed grid."""

    properties: dict
    classes: Optional[np.ndarray] = None
    probabilities: Optional[np.ndarray] = None


def can_stream(properties: dict) -> bool:
    """Slices map one to one between the preprocessed and the cropped grid (no slice-axis resampling)."""
    return properties["shape_before_resampling"][0] == properties["shape_after_resampling"][0]


def stream_classes(models: Sequence[VolumeModel], data: np.ndarray, properties: dict, device: torch.device,
                   settings: InferenceSettings, progress=None) -> np.ndarray:
    """The arg-max class map on the cropped grid, resampled chunk by chunk as the slices are predicted."""
    in_plane = properties["shape_before_resampling"][1:]
    classes = None
    for z0, z1, probabilities in predict_chunks(models, data, device, settings, progress):
        scores = probabilities.to(torch.float16).cpu().numpy()
        if classes is None:
            classes = np.empty(properties["shape_before_resampling"], smallest_unsigned(scores.shape[0] - 1))
        classes[z0:z1] = argmax_of_resampled(enumerate(scores), (z1 - z0, *in_plane), classes.dtype)
    return classes


def predict_case(models: Sequence[VolumeModel], data: np.ndarray, properties: dict, device: torch.device,
                 settings: InferenceSettings, keep_probabilities: bool = False, progress=None) -> CasePrediction:
    if can_stream(properties) and not keep_probabilities:
        return CasePrediction(properties, classes=stream_classes(models, data, properties, device, settings, progress))
    return CasePrediction(properties, probabilities=predict_probabilities(models, data, device, settings,
                                                                          progress=progress))


def export_case(prediction: CasePrediction, path: Path, save_probabilities: bool = False) -> Path:
    """Write the label map in the scan's geometry; with ``save_probabilities`` also CASE.npz beside it.

    CASE.npz holds ``probabilities`` (classes, Z, Y, X) float16 on the preprocessed grid and
    ``properties_json`` (the CASE.json record that ``restore_segmentation`` needs), read with
    ``np.load(allow_pickle=False)``.
    """
    properties = prediction.properties
    if prediction.probabilities is None:
        return write_restored(restore_cropped_classes(prediction.classes, properties), properties, path)
    if save_probabilities:
        record = np.frombuffer(json.dumps(properties).encode("utf-8"), dtype=np.uint8)
        write_npz(Path(path).with_name(strip_suffix(Path(path).name) + ".npz"),
                  {"probabilities": prediction.probabilities, "properties_json": record})
    return export_segmentation(prediction.probabilities, properties, path)
