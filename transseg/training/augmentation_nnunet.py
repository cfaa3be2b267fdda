"""The ``nnunet`` augmentation preset: nnU-Net's 2D intensity augmentations on top of the paper's window.

nnU-Net v2's ``get_training_transforms`` (the batchgenerators pipeline), in its order and with its
probabilities and ranges, after our one-resampling spatial transform:

    Gaussian noise          p 0.1    variance U(0, 0.1)
    Gaussian blur           p 0.2    sigma U(0.5, 1), drawn per channel, each channel with p 0.5
    brightness (multiply)   p 0.15   factor U(0.75, 1.25)
    contrast                p 0.15   factor in (0.75, 1.25), range preserved
    simulated low res.      p 0.25   zoom U(0.5, 1), per channel with p 0.5 (nearest down, cubic up)
    gamma, inverted image   p 0.1    gamma in (0.7, 1.5), mean and std retained
    gamma                   p 0.3    gamma in (0.7, 1.5), mean and std retained

A window (C, K, H, W) is handed to batchgenerators as *one* 3D sample, so every parameter is drawn
once per window (per channel where nnU-Net does) and holds for all K slices: they are one patch of
one scan. Two choices keep the transforms in-plane, as in nnU-Net's 2D pipeline: low resolution
never resamples the slice axis (``ignore_axes=(0,)``, nnU-Net's own setting for its pseudo-2D
augmentation), and runs slice by slice with one zoom (each slice resized on its own, as in the 2D
pipeline: within 0.003 of the 3D resize and 8x faster); blur runs with sigma (0, s, s)
(batchgenerators' ``GaussianBlurTransform`` blurs every spatial axis and would mix the slices).
Both keep batchgenerators' draws and its resampling function. Labels are never touched.

batchgenerators draws from numpy's and Python's global generators; :func:`augment_intensities` seeds
both from the window's own seed (itself drawn from the (seed, step, slot) generator) and restores the previous
state afterwards, so the result is a pure function of (seed, step, slot) and nothing leaks out.
"""
from __future__ import annotations

import contextlib
import random
from typing import Iterator

import numpy as np
from scipy.ndimage import gaussian_filter

PRESETS = ("paper", "nnunet")


def _transforms() -> list:
    """Built on first use: importing batchgenerators takes a moment, and only this preset needs it."""
    from batchgenerators.augmentations.resample_augmentations import augment_linear_downsampling_scipy
    from batchgenerators.augmentations.utils import get_range_val
    from batchgenerators.transforms.color_transforms import (BrightnessMultiplicativeTransform,
                                                             ContrastAugmentationTransform, GammaTransform)
    from batchgenerators.transforms.noise_transforms import GaussianBlurTransform, GaussianNoiseTransform
    from batchgenerators.transforms.resample_transforms import SimulateLowResolutionTransform

    class InPlaneGaussianBlur(GaussianBlurTransform):
        """``GaussianBlurTransform`` (one sigma per channel, no per-axis sigmas) that blurs rows and columns only."""

        def __call__(self, **data_dict):
            for sample in data_dict[self.data_key]:
                if np.random.uniform() < self.p_per_sample:
                    for channel in range(sample.shape[0]):
                        if np.random.uniform() <= self.p_per_channel:
                            sigma = get_range_val(self.blur_sigma)
                            sample[channel] = gaussian_filter(sample[channel], (0, sigma, sigma), order=0)
            return data_dict

    class InPlaneLowResolution(SimulateLowResolutionTransform):
        """``SimulateLowResolutionTransform`` (per channel, ``ignore_axes=(0,)``) run slice by slice.

        The same zoom for every slice of a channel; each slice is resized on its own, as nnU-Net's 2D
        pipeline does (the 3D resize with the slice axis ignored differs by < 0.003 and takes 8x longer).
        """

        def __call__(self, **data_dict):
            for sample in data_dict[self.data_key]:
                if np.random.uniform() < self.p_per_sample:
                    for channel in range(sample.shape[0]):
                        if np.random.uniform() < self.p_per_channel:
                            zoom = np.random.uniform(*self.zoom_range)
                            for k in range(sample.shape[1]):
                                sample[channel, k] = augment_linear_downsampling_scipy(
                                    sample[channel, k][None], (zoom, zoom), False, 1, None, self.order_downsample,
                                    self.order_upsample)[0]
            return data_dict

    return [
        ("gaussian_noise", GaussianNoiseTransform(p_per_sample=0.1)),
        ("gaussian_blur", InPlaneGaussianBlur((0.5, 1.0), different_sigma_per_channel=True, p_per_sample=0.2,
                                              p_per_channel=0.5)),
        ("brightness", BrightnessMultiplicativeTransform(multiplier_range=(0.75, 1.25), p_per_sample=0.15)),
        ("contrast", ContrastAugmentationTransform(p_per_sample=0.15)),
        ("low_resolution", InPlaneLowResolution(zoom_range=(0.5, 1), per_channel=True, p_per_channel=0.5,
                                                order_downsample=0, order_upsample=3, p_per_sample=0.25,
                                                ignore_axes=(0,))),
        ("gamma_inverted", GammaTransform((0.7, 1.5), True, True, retain_stats=True, p_per_sample=0.1)),
        ("gamma", GammaTransform((0.7, 1.5), False, True, retain_stats=True, p_per_sample=0.3)),
    ]


# the probability that each transform changes a one-channel window (p_per_sample x p_per_channel)
FIRING_PROBABILITY = {"gaussian_noise": 0.1, "gaussian_blur": 0.2 * 0.5, "brightness": 0.15, "contrast": 0.15,
                      "low_resolution": 0.25 * 0.5, "gamma_inverted": 0.1, "gamma": 0.3}
_CHAIN: list = []


def nnunet_transforms() -> list:
    """(name, batchgenerators transform) in nnU-Net's order; built once per process."""
    if not _CHAIN:
        _CHAIN.extend(_transforms())
    return _CHAIN


@contextlib.contextmanager
def _seeded_global_generators(seed: int) -> Iterator[None]:
    """numpy's and Python's global generators (batchgenerators draws from both) seeded, then restored."""
    numpy_state, python_state = np.random.get_state(), random.getstate()
    np.random.seed(seed % 2 ** 32)
    random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(numpy_state)
        random.setstate(python_state)


def augment_intensities(window: np.ndarray, seed: int, only: str = "") -> np.ndarray:
    """nnU-Net's intensity transforms on one window (C, K, H, W) float32, in place; returns it.

    ``only`` runs a single transform by name (tests measure each one's firing rate).
    """
    chain = [(n, t) for n, t in nnunet_transforms() if not only or n == only]
    if not chain:
        raise ValueError(f"unknown nnU-Net transform '{only}'; known: {[n for n, _ in nnunet_transforms()]}")
    batch = {"data": window[None]}
    with _seeded_global_generators(seed):
        for _, transform in chain:
            batch = transform(**batch)
    result = batch["data"][0]
    if not np.shares_memory(result, window):     # the transforms write into the batch; in case one replaced it
        window[...] = result
    return window
