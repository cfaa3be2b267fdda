"""Every slice of a preprocessed volume through the network once, from its own K-slice window.

Used by training's validation and by prediction alike, so the two cannot drift apart. Slices
are processed in chunks of ``batch_size`` windows (read from the array, edge slices clamped as in
training); a slice smaller than the network input is padded with -1 (as training pads), a larger
one is covered by overlapping tiles whose probabilities are averaged. Several models (folds) and
test-time flips are averaged as softmax probabilities. Chunks are yielded as they are done, so a
caller can reduce them (arg-max, a running mean, an export) without holding a probability volume
per class.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Iterator, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..preprocessing import read_window
from ..preprocessing.preprocessor import smallest_unsigned
from .window_spec import PAD_VALUE, WindowSpec

TTA_FLIPS: tuple[tuple[int, ...], ...] = ((), (-1,), (-2,), (-2, -1))   # in-plane mirrorings


@dataclass(frozen=True)
class InferenceSettings:
    batch_size: int = 8                      # windows per forward pass
    tile_step: float = 0.5                   # tile stride as a fraction of the input size (larger slices)
    tta: bool = False                        # average over the four in-plane mirrorings
    autocast: Optional[torch.dtype] = None   # torch.bfloat16 on CUDA; None runs in float32

    @classmethod
    def on(cls, device: torch.device, batch_size: int, tta: bool = False) -> "InferenceSettings":
        """The settings for ``device``: bf16 autocast on CUDA, float32 elsewhere."""
        return cls(batch_size=batch_size, tta=tta, autocast=torch.bfloat16 if device.type == "cuda" else None)


@dataclass
class VolumeModel:
    """A network in eval mode with the window it was trained on."""

    network: nn.Module
    spec: WindowSpec


def tile_starts(length: int, tile: int, step: float) -> list[int]:
    """Start offsets of tiles of size ``tile`` covering ``length`` (>= tile), evenly spread."""
    if length <= tile:
        return [0]
    count = math.ceil((length - tile) / max(1, int(tile * step))) + 1
    return [int(round(s)) for s in np.linspace(0, length - tile, count)]


def _autocast(device: torch.device, dtype: Optional[torch.dtype]):
    if dtype is None or device.type != "cuda":
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda", dtype=dtype)


def _centre_probabilities(model: VolumeModel, batch: torch.Tensor, settings: InferenceSettings) -> torch.Tensor:
    """Softmax of the centre slice's logits (B, N, H, W), averaged over the test-time flips."""
    flips = TTA_FLIPS if settings.tta else ((),)
    total = None
    for dims in flips:
        view = batch.flip(dims) if dims else batch
        with _autocast(batch.device, settings.autocast):
            logits = model.network(view)
        if logits.ndim == 5:                          # predict: all -> the centre slice of the window
            logits = logits[:, :, logits.shape[2] // 2]
        probabilities = torch.softmax(logits.float(), dim=1)
        probabilities = probabilities.flip(dims) if dims else probabilities
        total = probabilities if total is None else total + probabilities
    return total / len(flips)


def _tiled_probabilities(model: VolumeModel, windows: torch.Tensor, settings: InferenceSettings) -> torch.Tensor:
    """(B, C, K, Y, X) windows of any in-plane size -> (B, N, Y, X) probabilities."""
    height, width = model.spec.resolution
    size_y, size_x = windows.shape[-2:]
    pad_y, pad_x = max(0, height - size_y), max(0, width - size_x)
    before_y, before_x = pad_y // 2, pad_x // 2
    if pad_y or pad_x:
        windows = F.pad(windows, (before_x, pad_x - before_x, before_y, pad_y - before_y), value=PAD_VALUE)
    total, count = None, torch.zeros(windows.shape[-2:], device=windows.device)
    for y in tile_starts(windows.shape[-2], height, settings.tile_step):
        for x in tile_starts(windows.shape[-1], width, settings.tile_step):
            probabilities = _centre_probabilities(model, windows[..., y:y + height, x:x + width], settings)
            if total is None:
                total = windows.new_zeros((windows.shape[0], probabilities.shape[1], *windows.shape[-2:]))
            total[..., y:y + height, x:x + width] += probabilities
            count[y:y + height, x:x + width] += 1
    total /= count
    return total[..., before_y:before_y + size_y, before_x:before_x + size_x]


def window_batch(data: np.ndarray, centres: Sequence[int], spec: WindowSpec) -> np.ndarray:
    """(B, C, K, Y, X) float32 windows around ``centres`` of a (C, Z, Y, X) array."""
    return np.stack([np.asarray(read_window(data, int(z), spec.slices, spec.stride, axis=1), dtype=np.float32)
                     for z in centres])


@torch.no_grad()
def predict_chunks(models: Sequence[VolumeModel], data: np.ndarray, device: torch.device,
                   settings: InferenceSettings = InferenceSettings(),
                   progress=None) -> Iterator[tuple[int, int, torch.Tensor]]:
    """Yield (z0, z1, probabilities (N, z1 - z0, Y, X) float32 on ``device``) for consecutive slice chunks.

    Probabilities are the mean over ``models`` (and the flips with TTA) of their softmax outputs.
    """
    for model in models:
        model.network.eval()
    num_slices = data.shape[1]
    for z0 in range(0, num_slices, settings.batch_size):
        z1 = min(num_slices, z0 + settings.batch_size)
        mean = None
        for model in models:
            windows = torch.from_numpy(window_batch(data, range(z0, z1), model.spec)).to(device, non_blocking=True)
            probabilities = _tiled_probabilities(model, windows, settings)
            mean = probabilities if mean is None else mean + probabilities
        mean /= len(models)
        if progress is not None:
            progress.update(z1 - z0)
        yield z0, z1, mean.transpose(0, 1)


def predict_classes(models: Sequence[VolumeModel], data: np.ndarray, device: torch.device,
                    settings: InferenceSettings = InferenceSettings(), progress=None) -> np.ndarray:
    """The arg-max class of every voxel of a (C, Z, Y, X) volume, (Z, Y, X) uint8/uint16."""
    classes = None
    for z0, z1, probabilities in predict_chunks(models, data, device, settings, progress):
        if classes is None:
            classes = np.empty(data.shape[1:], smallest_unsigned(probabilities.shape[0] - 1))
        classes[z0:z1] = probabilities.argmax(0).cpu().numpy()
    return classes


def predict_probabilities(models: Sequence[VolumeModel], data: np.ndarray, device: torch.device,
                          settings: InferenceSettings = InferenceSettings(), dtype=np.float16,
                          progress=None) -> np.ndarray:
    """(N, Z, Y, X) probabilities in ``dtype`` (float16 by default: half the memory of float32)."""
    result = None
    for z0, z1, probabilities in predict_chunks(models, data, device, settings, progress):
        if result is None:
            result = np.empty((probabilities.shape[0], *data.shape[1:]), dtype)
        result[:, z0:z1] = probabilities.cpu().numpy()
    return result
