"""UPerNet decoder in plain PyTorch (no mmcv/mmseg), plus the necks that feed it a 4-level pyramid.

Neck: a plain ViT has one scale (stride P), so four block outputs are turned into strides P/4,
P/2, P, 2P (x4 up by two transposed convs with BN+GELU between, as in BEiT's segmentation code;
x2 up by one transposed conv; identity; 2x2 max-pool). Swin already has four stages; each gets a
LayerNorm as in Swin's segmentation code.

Head: pyramid pooling (1, 2, 3, 6) on the coarsest level, FPN laterals with top-down fusion,
3x3 FPN convs, a 3x3 bottleneck over the concatenated levels, dropout and a 1x1 classifier.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from timm.layers import LayerNorm2d


def _resize(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


class ConvBNReLU(nn.Sequential):
    """Conv (no bias) + BatchNorm + ReLU, the UPerNet building block."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class ViTFeaturePyramid(nn.Module):
    """Four same-stride ViT maps -> strides x4 up, x2 up, x1, x1/2 (BEiT segmentation neck)."""

    def __init__(self, in_channels: Sequence[int]):
        super().__init__()
        c0, c1, _, _ = in_channels
        self.levels = nn.ModuleList([
            nn.Sequential(
                nn.ConvTranspose2d(c0, c0, kernel_size=2, stride=2),
                nn.BatchNorm2d(c0),
                nn.GELU(),
                nn.ConvTranspose2d(c0, c0, kernel_size=2, stride=2),
            ),
            nn.ConvTranspose2d(c1, c1, kernel_size=2, stride=2),
            nn.Identity(),
            nn.MaxPool2d(kernel_size=2, stride=2),
        ])
        self.out_channels = list(in_channels)

    def forward(self, feats: List[torch.Tensor]) -> List[torch.Tensor]:
        return [op(f) for op, f in zip(self.levels, feats)]


class StageNorms(nn.Module):
    """Hierarchical stages are already a pyramid; normalise each one (Swin segmentation practice)."""

    def __init__(self, in_channels: Sequence[int]):
        super().__init__()
        self.norms = nn.ModuleList([LayerNorm2d(c) for c in in_channels])
        self.out_channels = list(in_channels)

    def forward(self, feats: List[torch.Tensor]) -> List[torch.Tensor]:
        return [norm(f) for norm, f in zip(self.norms, feats)]


NECKS: Dict[str, Callable[[Sequence[int]], nn.Module]] = {
    "plain_vit": ViTFeaturePyramid,
    "hierarchical": StageNorms,
}


class PyramidPooling(nn.Module):
    """Pool the coarsest map at several grid sizes, project, upsample, concatenate, fuse."""

    def __init__(self, in_channels: int, channels: int, scales: Sequence[int] = (1, 2, 3, 6)):
        super().__init__()
        self.branches = nn.ModuleList(
            [nn.Sequential(nn.AdaptiveAvgPool2d(s), ConvBNReLU(in_channels, channels, 1)) for s in scales]
        )
        self.bottleneck = ConvBNReLU(in_channels + len(scales) * channels, channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = [_resize(branch(x), x.shape[-2:]) for branch in self.branches]
        return self.bottleneck(torch.cat([x, *pooled], dim=1))


class UPerHead(nn.Module):
    """Four pyramid levels (finest first) -> logits at the finest level's resolution.

    Note: BatchNorm after the 1x1 pooled branch needs a batch of at least 2 in training mode.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        channels: int,
        out_channels: int,
        pool_scales: Sequence[int] = (1, 2, 3, 6),
        dropout: float = 0.1,
    ):
        super().__init__()
        *fine, coarsest = in_channels
        self.ppm = PyramidPooling(coarsest, channels, pool_scales)
        self.laterals = nn.ModuleList([ConvBNReLU(c, channels, 1) for c in fine])
        self.fpn_convs = nn.ModuleList([ConvBNReLU(channels, channels, 3) for _ in fine])
        self.fpn_bottleneck = ConvBNReLU(len(in_channels) * channels, channels, 3)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(channels, out_channels, kernel_size=1)

    def forward(self, feats: List[torch.Tensor]) -> torch.Tensor:
        levels = [lateral(f) for lateral, f in zip(self.laterals, feats[:-1])] + [self.ppm(feats[-1])]
        for i in range(len(levels) - 1, 0, -1):  # top-down: add the coarser level, upsampled
            levels[i - 1] = levels[i - 1] + _resize(levels[i], levels[i - 1].shape[-2:])
        outs = [conv(level) for conv, level in zip(self.fpn_convs, levels[:-1])] + [levels[-1]]
        size = outs[0].shape[-2:]
        fused = self.fpn_bottleneck(torch.cat([outs[0]] + [_resize(o, size) for o in outs[1:]], dim=1))
        return self.classifier(self.dropout(fused))
