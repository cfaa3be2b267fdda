"""The 3D patch embedding: one Conv3d with kernel = stride = (K, P, P).

A window of K slices becomes a single depth token per (P x P) patch, so the token grid is exactly
the 2D model's and every layer after the embedding is the unchanged timm network. The module
mimics the attributes of timm's ``PatchEmbed`` that timm models read (grid_size, feat_ratio,
dynamic_feat_size, output format, norm) so it can be dropped into a timm model in place.
"""

from __future__ import annotations

from typing import Optional, Tuple, Union

import torch
from torch import nn

from timm.layers.format import Format, nchw_to


def _pair(v: Union[int, Tuple[int, int]]) -> Tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


class PatchEmbed3d(nn.Module):
    """(B, C, K, H, W) or (B, C*K, H, W) -> tokens in the replaced 2D embedding's output format.

    Accepting the folded (B, C*K, H, W) form lets timm's own ``forward_intermediates`` (which reads
    ``B, C, H, W = x.shape``) drive the network unchanged.
    """

    def __init__(
        self,
        img_size: Tuple[int, int],
        patch_size: Tuple[int, int],
        in_channels: int,
        slices: int,
        embed_dim: int,
        bias: bool = True,
        norm: Optional[nn.Module] = None,
        flatten: bool = True,
        output_fmt: Format = Format.NCHW,
    ):
        super().__init__()
        self.patch_size = _pair(patch_size)
        self.in_channels = in_channels
        self.slices = slices
        self.flatten = flatten
        self.output_fmt = output_fmt
        self.strict_img_size = True
        self.dynamic_img_pad = False
        self.proj = nn.Conv3d(
            in_channels, embed_dim, kernel_size=(slices, *self.patch_size), stride=(slices, *self.patch_size), bias=bias
        )
        self.norm = norm if norm is not None else nn.Identity()
        self.set_input_size(img_size)

    @classmethod
    def from_2d(cls, embed2d: nn.Module, in_channels: int, slices: int) -> "PatchEmbed3d":
        """Build the 3D replacement of a timm PatchEmbed, keeping its norm layer and output format."""
        proj = embed2d.proj
        if not isinstance(proj, nn.Conv2d) or tuple(proj.kernel_size) != tuple(proj.stride):
            raise ValueError(f"backbone patch embedding must be a non-overlapping Conv2d, got {proj}")
        return cls(
            img_size=embed2d.img_size,
            patch_size=tuple(proj.kernel_size),
            in_channels=in_channels,
            slices=slices,
            embed_dim=proj.out_channels,
            bias=proj.bias is not None,
            norm=embed2d.norm,
            flatten=getattr(embed2d, "flatten", True),
            output_fmt=getattr(embed2d, "output_fmt", Format.NCHW),
        )

    def set_input_size(self, img_size: Optional[Union[int, Tuple[int, int]]] = None, patch_size=None) -> None:
        """Fix the in-plane size; the patch size is part of the pre-trained kernel and cannot change."""
        if patch_size is not None and _pair(patch_size) != self.patch_size:
            raise ValueError("PatchEmbed3d cannot change its patch size")
        if img_size is None:
            return
        size = _pair(img_size)
        bad = [s for s, p in zip(size, self.patch_size) if s % p]
        if bad:
            raise ValueError(f"image size {size} must be a multiple of the patch size {self.patch_size}")
        self.img_size = size
        self.grid_size = (size[0] // self.patch_size[0], size[1] // self.patch_size[1])
        self.num_patches = self.grid_size[0] * self.grid_size[1]

    def feat_ratio(self, as_scalar: bool = True) -> Union[int, Tuple[int, int]]:
        return max(self.patch_size) if as_scalar else self.patch_size

    def dynamic_feat_size(self, img_size: Tuple[int, int]) -> Tuple[int, int]:
        return img_size[0] // self.patch_size[0], img_size[1] // self.patch_size[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 4:  # folded (B, C*K, H, W) from the encoder wrapper
            x = x.unflatten(1, (self.in_channels, self.slices))
        B, C, K, H, W = x.shape
        if (C, K) != (self.in_channels, self.slices) or (H, W) != self.img_size:
            raise ValueError(
                f"patch embedding expects (B, {self.in_channels}, {self.slices}, {self.img_size[0]}, "
                f"{self.img_size[1]}), got {tuple(x.shape)}"
            )
        x = self.proj(x).squeeze(2)  # (B, D, 1, h, w) -> (B, D, h, w)
        if self.flatten:
            x = x.flatten(2).transpose(1, 2)  # NLC
        elif self.output_fmt != Format.NCHW:
            x = nchw_to(x, self.output_fmt)  # e.g. NHWC for Swin
        return self.norm(x)
