"""Chunks of predicted slices -> the class map on the cropped grid, never holding a probability volume.

Prediction yields the probabilities of consecutive chunks of preprocessed slices. Each output
slice of the cropped grid (before resampling) is computed as soon as the input slices it needs
have arrived, then those inputs are dropped:

- slice axis not resampled (the usual plan): output slice z is input slice z, resampled in-plane;
- slice axis resampled: output slice j blends input slices ``lower[j]`` and ``upper[j]`` linearly
  (``resampling.linear_taps``), so a few input slices are kept past their chunk until the outputs
  that need them are done: memory is a chunk plus the taps' reach, whatever the case's length.

Every number is computed with the same float32 operations, in the same order per voxel, as
``restore_segmentation`` on the full float16 probabilities (``resampling.resample_slices``, then
the in-plane pass and the running arg-max of ``argmax_of_resampled``), so streaming changes
nothing but the memory: the tests compare the two exactly.
"""
from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np

from ..preprocessing.preprocessor import smallest_unsigned
from ..preprocessing.resampling import argmax_of_resampled, linear_taps


def _blended(volume: np.ndarray, lower: np.ndarray, upper: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Linear slice interpolation of one class, as ``resample_slices`` does it on a float32 copy."""
    out = volume.take(lower, axis=0).astype(np.float32)
    high = volume.take(upper, axis=0).astype(np.float32)
    high -= out
    high *= weight.reshape(-1, 1, 1)
    out += high
    return out


class ClassMapStream:
    """Feed (z0, z1, float16 scores (N, z1 - z0, Y, X)) for consecutive chunks; read ``classes`` at the end."""

    def __init__(self, shape_before_resampling: Sequence[int], num_input_slices: int, num_classes: int):
        self.shape = tuple(int(n) for n in shape_before_resampling)
        self.classes = np.empty(self.shape, smallest_unsigned(num_classes - 1))
        self.resampled = num_input_slices != self.shape[0]
        if self.resampled:
            self.lower, self.upper, self.weight = linear_taps(num_input_slices, self.shape[0])
        self.kept, self.kept_from, self.done = None, 0, 0      # input slices still needed; outputs finished

    def _argmax(self, scores: Iterator[tuple[int, np.ndarray]], start: int, stop: int) -> None:
        self.classes[start:stop] = argmax_of_resampled(scores, (stop - start, *self.shape[1:]), self.classes.dtype)

    def add(self, z0: int, z1: int, scores: np.ndarray) -> None:
        if not self.resampled:
            self._argmax(enumerate(scores), z0, z1)
            return
        self.kept = scores if self.kept is None else np.concatenate([self.kept, scores], axis=1)
        stop = int(np.searchsorted(self.upper, z1 - 1, side="right"))     # outputs whose inputs have all arrived
        if stop > self.done:
            taps = slice(self.done, stop)
            lower, upper = self.lower[taps] - self.kept_from, self.upper[taps] - self.kept_from
            weight = self.weight[taps]
            self._argmax(((c, _blended(self.kept[c], lower, upper, weight)) for c in range(self.kept.shape[0])),
                         self.done, stop)
            self.done = stop
        first_needed = min(int(self.lower[self.done]), z1) if self.done < self.shape[0] else z1
        if first_needed > self.kept_from:
            self.kept = np.ascontiguousarray(self.kept[:, first_needed - self.kept_from:])
            self.kept_from = first_needed

    def result(self) -> np.ndarray:
        if self.resampled and self.done != self.shape[0]:
            raise RuntimeError(f"slice stream ended after {self.done} of {self.shape[0]} output slices")
        return self.classes
