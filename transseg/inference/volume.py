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

import functools
import math
from dataclasses import dataclass
from typing import Iterator, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..preprocessing import read_window
from ..preprocessing.preprocessor import smallest_unsigned
from .precision import autocast, autocast_dtype
from .window_spec import PAD_VALUE, WindowSpec

TTA_FLIPS: tuple[tuple[int, ...], ...] = ((), (-1,), (-2,), (-2, -1))   # in-plane mirrorings
SLICE_FLIP = -3                     # the window's slice axis: reversed, the centre slice stays the centre
TILE_WEIGHTINGS = ("gaussian", "uniform")


@dataclass(frozen=True)
class InferenceSettings:
    batch_size: int = 8                      # windows per forward pass
    tile_step: float = 0.5                   # tile stride as a fraction of the input size (larger slices)
    tta: bool = False                        # average over the four in-plane mirrorings ...
    tta_slice_flip: bool = False             # ... and, with tta, each also with the window reversed (8 in all)
    tile_weighting: str = "gaussian"         # overlapping tiles: 'gaussian' (centres count most) or 'uniform'
    autocast: Optional[torch.dtype] = None   # the network's autocast dtype (bf16); None runs in float32

    @classmethod
    def on(cls, device: torch.device, batch_size: int, tta: bool = False,
           precision: str = "auto") -> "InferenceSettings":
        """The settings for ``device``; ``precision`` auto: bf16 on CUDA and on CPUs with native bf16."""
        return cls(batch_size=batch_size, tta=tta, autocast=autocast_dtype(precision, device))


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


def tta_flips(settings: InferenceSettings) -> tuple[tuple[int, ...], ...]:
    """The input flips averaged: none; with TTA the in-plane mirrorings, each also with the slice axis reversed."""
    if not settings.tta:
        return ((),)
    return TTA_FLIPS + tuple((SLICE_FLIP, *dims) for dims in TTA_FLIPS) if settings.tta_slice_flip else TTA_FLIPS


@functools.lru_cache(maxsize=16)          # the same few tile shapes for every chunk; callers never write to it
def tile_weights(height: int, width: int, kind: str, device: torch.device) -> torch.Tensor:
    """(H, W) weight of each pixel of a tile: 1 ('uniform'), or a Gaussian with sigma 1/8 of the tile side,
    as nnU-Net weights sliding windows ('gaussian'): tile borders, which see less context, count less."""
    if kind == "uniform":
        return torch.ones((height, width), device=device)
    if kind != "gaussian":
        raise ValueError(f"unknown tile weighting '{kind}' (expected one of {TILE_WEIGHTINGS})")
    axes = [torch.exp(-0.5 * ((torch.arange(n, dtype=torch.float64) - (n - 1) / 2) / (n / 8)) ** 2)
            for n in (height, width)]
    weights = axes[0][:, None] * axes[1][None, :]
    weights /= weights.max()
    return weights.clamp_min(weights[weights > 0].min()).float().to(device)


def _centre_probabilities(model: VolumeModel, batch: torch.Tensor, settings: InferenceSettings) -> torch.Tensor:
    """Softmax of the centre slice's logits (B, N, H, W), averaged over the test-time flips."""
    flips = tta_flips(settings)
    total = None
    for dims in flips:
        view = batch.flip(dims) if dims else batch
        with autocast(batch.device, settings.autocast):
            logits = model.network(view)
        if logits.ndim == 5:                          # predict: all -> the centre slice of the window
            logits = logits[:, :, logits.shape[2] // 2]
        probabilities = torch.softmax(logits.float(), dim=1)
        in_plane = tuple(d for d in dims if d != SLICE_FLIP)    # the output has no slice axis to flip back
        probabilities = probabilities.flip(in_plane) if in_plane else probabilities
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
    starts_y = tile_starts(windows.shape[-2], height, settings.tile_step)
    starts_x = tile_starts(windows.shape[-1], width, settings.tile_step)
    if len(starts_y) == len(starts_x) == 1:          # one tile: nothing to weigh
        total = _centre_probabilities(model, windows, settings)
        return total[..., before_y:before_y + size_y, before_x:before_x + size_x]
    weights = tile_weights(height, width, settings.tile_weighting, windows.device)
    total, count = None, torch.zeros(windows.shape[-2:], device=windows.device)
    for y in starts_y:
        for x in starts_x:
            probabilities = _centre_probabilities(model, windows[..., y:y + height, x:x + width], settings)
            if total is None:
                total = windows.new_zeros((windows.shape[0], probabilities.shape[1], *windows.shape[-2:]))
            total[..., y:y + height, x:x + width] += probabilities * weights
            count[y:y + height, x:x + width] += weights
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

    Probabilities are the mean over ``models`` (and the flips with TTA) of their softmax outputs. A chunk's
    windows are built once and shared by every fold with the same window; on a GPU they go through pinned
    host memory, so the copy runs asynchronously.
    """
    for model in models:
        model.network.eval()
    num_slices = data.shape[1]
    for z0 in range(0, num_slices, settings.batch_size):
        z1 = min(num_slices, z0 + settings.batch_size)
        mean, built = None, {}
        for model in models:
            if model.spec not in built:
                windows = torch.from_numpy(window_batch(data, range(z0, z1), model.spec))
                built[model.spec] = (windows.pin_memory() if device.type == "cuda" else windows).to(
                    device, non_blocking=True)
            probabilities = _tiled_probabilities(model, built[model.spec], settings)
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
