"""The 'nnunet' augmentation preset: each transform fires with nnU-Net's probability, holds for all K slices,
is a pure function of (seed, step, slot), and never touches the label."""
import dataclasses
import math
import random

import numpy as np
import pytest

from transseg.inference.window_spec import WindowSpec
from transseg.planning.plans import AUGMENTATION_PRESETS, AugmentationPlan
from transseg.training.augmentation_nnunet import (FIRING_PROBABILITY, PRESETS, augment_intensities,
                                                   nnunet_transforms)
from transseg.training.sampling import TrainingCase, draw_window
from transseg.training.windows import cut_window

DRAWS = 500


def _window(rng: np.random.Generator, slices: int = 5) -> np.ndarray:
    """A smooth random image (blur and low resolution change it visibly), the same in every slice."""
    field = rng.standard_normal((1, 1, 48, 48)).cumsum(axis=2).cumsum(axis=3)
    field = (field - field.mean()) / field.std() * 0.4
    return np.repeat(field, slices, axis=1).astype(np.float32)


@pytest.mark.parametrize("name", list(FIRING_PROBABILITY))
def test_each_transform_fires_with_its_probability_and_the_same_for_all_slices(name):
    base = _window(np.random.default_rng(0))
    fired = 0
    for seed in range(DRAWS):
        out = augment_intensities(base.copy(), seed, only=name)
        if not np.array_equal(out, base):
            fired += 1
            if name != "gaussian_noise":                     # noise is drawn per voxel; its variance per window
                assert all(np.array_equal(out[:, k], out[:, 0]) for k in range(out.shape[1])), (name, seed)
    p = FIRING_PROBABILITY[name]
    bound = 4 * math.sqrt(p * (1 - p) / DRAWS)              # 4 standard deviations: a deterministic test, no flakes
    print(f"{name}: fired {fired / DRAWS:.3f}, nnU-Net's probability {p:.3f} +- {bound:.3f}")
    assert abs(fired / DRAWS - p) <= bound


@pytest.mark.parametrize("name", ["gaussian_blur", "brightness", "low_resolution"])
def test_in_plane_transforms_treat_each_slice_alike_and_alone(name):
    """Slices that differ: each comes out as if transformed alone with the same draws (no mixing across K)."""
    rng = np.random.default_rng(3)
    base = np.concatenate([_window(rng, 1) for _ in range(5)], axis=1)
    fired = 0
    for seed in range(40):
        out = augment_intensities(base.copy(), seed, only=name)
        fired += not np.array_equal(out, base)
        for k in range(5):
            alone = augment_intensities(base[:, k:k + 1].copy(), seed, only=name)
            np.testing.assert_allclose(out[:, k:k + 1], alone, rtol=0, atol=1e-6)
    assert fired >= 2                       # not vacuous


@pytest.mark.parametrize("name", list(FIRING_PROBABILITY))
def test_each_transform_leaves_a_label_untouched_even_when_handed_one(name):
    transform = dict(nnunet_transforms())[name]
    rng = np.random.default_rng(4)
    seg = rng.integers(0, 3, (1, 1, 5, 48, 48)).astype(np.float32)
    fired = 0
    for seed in range(40):
        np.random.seed(seed)
        random.seed(seed)
        data = _window(rng)[None]
        result = transform(data=data.copy(), seg=seg.copy())
        assert np.array_equal(result["seg"], seg)
        fired += not np.array_equal(result["data"], data)
    assert fired >= 1


def test_noise_has_one_variance_per_window():
    base = np.zeros((1, 5, 128, 128), np.float32)
    for seed in range(200):
        out = augment_intensities(base.copy(), seed, only="gaussian_noise")
        if out.any():
            stds = out.reshape(5, -1).std(axis=1)
            assert stds.max() / stds.min() < 1.1
            assert not np.array_equal(out[:, 0], out[:, 1])    # independent noise in each slice
            return
    pytest.fail("noise never fired")


def test_the_chain_is_nnunets_in_order_and_a_pure_function_of_the_seed():
    assert [name for name, _ in nnunet_transforms()] == list(FIRING_PROBABILITY)
    assert PRESETS == AUGMENTATION_PRESETS
    base = _window(np.random.default_rng(1))
    np.random.seed(123)
    random.seed(123)
    before, python_before = np.random.get_state()[1].copy(), random.getstate()
    first = augment_intensities(base.copy(), 7)
    assert np.array_equal(np.random.get_state()[1], before)     # the global generators are left as they were
    assert random.getstate() == python_before
    assert np.array_equal(augment_intensities(base.copy(), 7), first)
    assert any(not np.array_equal(augment_intensities(base.copy(), s), first) for s in range(8, 12))


def test_a_window_keeps_its_geometry_and_label_under_the_nnunet_preset():
    rng = np.random.default_rng(2)
    data = rng.uniform(-1, 1, (1, 12, 40, 40)).astype(np.float32)
    seg = (rng.random((12, 40, 40)) < 0.3).astype(np.uint8)
    cases = [TrainingCase("a", 12, {1: list(range(12))})]
    spec = WindowSpec(5, 1, (32, 32))
    paper, nnunet = AugmentationPlan(), dataclasses.replace(AugmentationPlan(), preset="nnunet")
    changed = 0
    for slot in range(40):
        a = draw_window(0, 3, slot, cases, slot % 2 == 0, paper)
        b = draw_window(0, 3, slot, cases, slot % 2 == 0, nnunet)
        assert a == dataclasses.replace(b, augmentation=dataclasses.replace(b.augmentation, intensity_seed=None))
        image_a, target_a = cut_window(data, seg, a, spec)
        image_b, target_b = cut_window(data, seg, b, spec)
        assert np.array_equal(target_a.numpy(), target_b.numpy())       # labels untouched
        again_b, _ = cut_window(data, seg, draw_window(0, 3, slot, cases, slot % 2 == 0, nnunet), spec)
        assert np.array_equal(image_b.numpy(), again_b.numpy())         # (seed, step, slot) decides
        changed += not np.array_equal(image_a.numpy(), image_b.numpy())
    assert 10 <= changed < 40          # P(no transform fires) = 0.9 * 0.9 * 0.85 * 0.85 * 0.875 * 0.9 * 0.7 ~ 0.32
