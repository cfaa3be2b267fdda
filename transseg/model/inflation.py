"""Inflate a pre-trained 2D patch-embedding weight to a 3D one (pure tensor functions).

A 2D ViT starts with a Conv2d of weight (Co, 3, P, P). We turn it into a Conv3d weight
(Co, C, K, P, P) in two independent steps, so each rule can be tested and swapped alone:

1. channels: the RGB axis is summed to one channel (a grey image fed to all three colour inputs
   gives the same response), then each of the C input channels gets that sum divided by C, so C
   identical channels reproduce the 1-channel response (the paper's rule; timm's ``in_chans``
   adaptation repeats and rescales the RGB weights instead, which is different).
2. depth: the 2D kernel is spread over K slices by a named strategy from ``DEPTH_INFLATIONS``.
"""

from __future__ import annotations

from typing import Callable, Dict, Optional

import torch

DepthInflation = Callable[[torch.Tensor, int], Optional[torch.Tensor]]


def collapse_channels(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """(Co, Ci, P, P) -> (Co, C, P, P): sum over Ci, give each of the C channels sum / C.

    Keeps the response to C identical channels equal to the response of the summed kernel to one,
    which is what the encoder saw in pre-training for a grey image.
    """
    if weight.ndim != 4:
        raise ValueError(f"expected a Conv2d weight (Co, Ci, P, P), got shape {tuple(weight.shape)}")
    if in_channels < 1:
        raise ValueError(f"in_channels must be >= 1, got {in_channels}")
    summed = weight.sum(dim=1, keepdim=True)
    return (summed / in_channels).expand(-1, in_channels, -1, -1).contiguous()


def inflate_center(weight: torch.Tensor, slices: int) -> torch.Tensor:
    """Pre-trained kernel on the centre depth, zeros elsewhere: the K-slice model starts as the 2D one."""
    out = weight.new_zeros(weight.shape[0], weight.shape[1], slices, *weight.shape[2:])
    out[:, :, slices // 2] = weight
    return out


def inflate_average(weight: torch.Tensor, slices: int) -> torch.Tensor:
    """Kernel / K on every depth: K identical slices give exactly the 2D response."""
    return (weight.unsqueeze(2) / slices).expand(-1, -1, slices, -1, -1).contiguous()


def inflate_none(weight: torch.Tensor, slices: int) -> None:
    """No inflation: the Conv3d keeps its own random initialisation (the paper's 'random' ablation)."""
    return None


DEPTH_INFLATIONS: Dict[str, DepthInflation] = {
    "center": inflate_center,
    "average": inflate_average,
    "none": inflate_none,
}


def get_depth_inflation(name: str) -> DepthInflation:
    """Look up a depth strategy by name, with a message listing the known ones."""
    try:
        return DEPTH_INFLATIONS[name]
    except KeyError:
        raise ValueError(f"unknown inflation {name!r}; choose one of {sorted(DEPTH_INFLATIONS)}") from None


def inflate_patch_weight(
    weight: torch.Tensor, in_channels: int, slices: int, strategy: str = "center"
) -> Optional[torch.Tensor]:
    """Conv2d weight (Co, Ci, P, P) -> Conv3d weight (Co, C, K, P, P), or None for strategy 'none'."""
    if slices < 1:
        raise ValueError(f"slices must be >= 1, got {slices}")
    return get_depth_inflation(strategy)(collapse_channels(weight, in_channels), slices)
