"""Inflation rules (pure tensor functions) and the 3D patch embedding module."""

import pytest
import torch
import torch.nn.functional as F

from transseg.model.inflation import (
    DEPTH_INFLATIONS,
    collapse_channels,
    get_depth_inflation,
    inflate_patch_weight,
)
from transseg.model.patch_embed import PatchEmbed3d


@pytest.fixture
def rgb_weight():
    torch.manual_seed(0)
    return torch.randn(8, 3, 4, 4, dtype=torch.float64)


def test_registry_has_the_three_strategies():
    assert set(DEPTH_INFLATIONS) == {"center", "average", "none"}
    with pytest.raises(ValueError, match="unknown inflation 'middle'"):
        get_depth_inflation("middle")


@pytest.mark.parametrize("channels", [1, 2, 4])
def test_channels_get_rgb_sum_divided_by_c(rgb_weight, channels):
    out = collapse_channels(rgb_weight, channels)
    assert out.shape == (8, channels, 4, 4)
    rgb_sum = rgb_weight[:, 0] + rgb_weight[:, 1] + rgb_weight[:, 2]
    for c in range(channels):
        assert torch.allclose(out[:, c], rgb_sum / channels, rtol=0, atol=1e-14)
    # a grey image through RGB == the same image through the collapsed kernel on C identical channels
    grey = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    ref = F.conv2d(grey.expand(-1, 3, -1, -1), rgb_weight, stride=4)
    got = F.conv2d(grey.expand(-1, channels, -1, -1), out, stride=4)
    assert torch.allclose(got, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("slices", [1, 3, 5])
def test_center_puts_kernel_on_middle_depth_only(rgb_weight, slices):
    w = inflate_patch_weight(rgb_weight, 1, slices, "center")
    assert w.shape == (8, 1, slices, 4, 4)
    assert torch.equal(w[:, :, slices // 2], rgb_weight.sum(1, keepdim=True))
    others = [d for d in range(slices) if d != slices // 2]
    assert torch.count_nonzero(w[:, :, others]) == 0


@pytest.mark.parametrize("slices", [1, 5])
def test_average_spreads_kernel_over_depth(rgb_weight, slices):
    w = inflate_patch_weight(rgb_weight, 2, slices, "average")
    assert w.shape == (8, 2, slices, 4, 4)
    expected = rgb_weight.sum(1, keepdim=True).expand(-1, 2, -1, -1) / 2 / slices
    for d in range(slices):
        assert torch.allclose(w[:, :, d], expected, rtol=0, atol=1e-14)
    assert torch.allclose(w.sum(2), rgb_weight.sum(1, keepdim=True).expand(-1, 2, -1, -1) / 2, atol=1e-13)


def test_none_leaves_random_init(rgb_weight):
    assert inflate_patch_weight(rgb_weight, 1, 5, "none") is None


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="Conv2d weight"):
        collapse_channels(torch.zeros(8, 3, 1, 4, 4), 1)
    with pytest.raises(ValueError, match="slices"):
        inflate_patch_weight(torch.zeros(8, 3, 4, 4), 1, 0)


def test_patch_embed3d_is_a_real_conv3d_and_accepts_folded_input():
    torch.manual_seed(0)
    embed = PatchEmbed3d(img_size=(32, 48), patch_size=(16, 16), in_channels=2, slices=3, embed_dim=6)
    assert isinstance(embed.proj, torch.nn.Conv3d)
    assert embed.state_dict()["proj.weight"].shape == (6, 2, 3, 16, 16)
    assert embed.grid_size == (2, 3) and embed.num_patches == 6
    x = torch.randn(2, 2, 3, 32, 48)
    tokens = embed(x)
    assert tokens.shape == (2, 6, 6)  # (B, tokens, D): one depth token per window
    assert torch.equal(embed(x.flatten(1, 2)), tokens)
    # token (row 1, col 2) is the dot product of the kernel with that patch of the whole window
    patch = x[:, :, :, 16:32, 32:48]
    expected = torch.einsum("bckhw,ockhw->bo", patch, embed.proj.weight) + embed.proj.bias
    assert torch.allclose(tokens[:, 1 * 3 + 2], expected, atol=1e-5)


def test_patch_embed3d_rejects_wrong_sizes():
    with pytest.raises(ValueError, match="multiple of the patch size"):
        PatchEmbed3d(img_size=(30, 32), patch_size=(16, 16), in_channels=1, slices=1, embed_dim=4)
    embed = PatchEmbed3d(img_size=(32, 32), patch_size=(16, 16), in_channels=1, slices=3, embed_dim=4)
    with pytest.raises(ValueError, match="expects"):
        embed(torch.zeros(1, 1, 5, 32, 32))
