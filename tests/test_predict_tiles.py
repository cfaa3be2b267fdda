"""Overlapping tiles weighted as stated (Gaussian or uniform), and TTA's slice flip really reverses the window."""
import numpy as np
import pytest
import torch

from transseg.inference.volume import (InferenceSettings, VolumeModel, predict_probabilities, tile_starts,
                                       tile_weights, tta_flips)
from transseg.inference.window_spec import WindowSpec

CPU = torch.device("cpu")


class TileMean(torch.nn.Module):
    """Two classes whose logits are +-(the tile's mean of the centre slice): constant over each tile."""

    def forward(self, x):
        level = x[:, 0, x.shape[2] // 2].mean(dim=(-2, -1), keepdim=True).expand(-1, *x.shape[-2:])
        return torch.stack([level, -level], dim=1)


class SliceOrder(torch.nn.Module):
    """Class 0 when the window's first slice is brighter than its last, class 1 otherwise (sharply)."""

    def forward(self, x):
        difference = (x[:, 0, 0] - x[:, 0, -1]) * 50.0
        return torch.stack([difference, -difference], dim=1)


def test_gaussian_weights_peak_at_the_centre_and_never_vanish():
    weights = tile_weights(16, 20, "gaussian", CPU)
    assert weights.shape == (16, 20) and weights.max() == 1.0 and weights.min() > 0
    assert torch.equal(weights, weights.flip(0)) and torch.equal(weights, weights.flip(1))
    assert weights[8, 10] > weights[8, 15] > weights[8, 19] and weights[0, 0] < 1e-3
    assert torch.equal(tile_weights(16, 20, "uniform", CPU), torch.ones(16, 20))


@pytest.mark.parametrize("kind", ["gaussian", "uniform"])
def test_overlapping_tiles_are_averaged_with_the_stated_weights(kind):
    rng = np.random.default_rng(0)
    data = rng.uniform(-1, 1, (1, 3, 16, 28)).astype(np.float32)
    model = VolumeModel(TileMean(), WindowSpec(1, 1, (16, 16)))
    result = predict_probabilities([model], data, CPU, InferenceSettings(batch_size=2, tile_weighting=kind),
                                   dtype=np.float32)
    starts = tile_starts(28, 16, 0.5)
    assert starts == [0, 6, 12]                                        # three overlapping tiles
    weights = tile_weights(16, 16, kind, CPU).double().numpy()
    for z in range(3):
        total, count = np.zeros((16, 28)), np.zeros((16, 28))
        for x in starts:
            level = data[0, z, :, x:x + 16].mean()
            total[:, x:x + 16] += weights / (1 + np.exp(-2 * level))      # softmax of (level, -level), class 0
            count[:, x:x + 16] += weights
        assert np.allclose(result[0, z], total / count, atol=1e-5), (kind, z)


def test_tta_reverses_the_window_along_the_slices_and_averages():
    assert len(tta_flips(InferenceSettings(tta=True, tta_slice_flip=True))) == 8
    assert len(tta_flips(InferenceSettings(tta=True))) == 4
    assert tta_flips(InferenceSettings()) == ((),)
    ramp = np.broadcast_to(np.arange(6, dtype=np.float32)[:, None, None] / 6, (6, 8, 8))[None].copy()
    model = VolumeModel(SliceOrder(), WindowSpec(3, 1, (8, 8)))
    in_plane = predict_probabilities([model], ramp, CPU, InferenceSettings(tta=True, tta_slice_flip=False),
                                     dtype=np.float32)
    both = predict_probabilities([model], ramp, CPU, InferenceSettings(tta=True, tta_slice_flip=True),
                                 dtype=np.float32)
    assert np.all(in_plane[1, 1:5] > 0.99)                            # a rising ramp: last slice brighter
    assert np.allclose(both[:, 1:5], 0.5, atol=1e-6)                   # reversed half the time: undecided
