"""The encoder: an unchanged timm backbone whose patch embedding is replaced by the 3D one.

Features come from timm's own ``forward_intermediates`` (no re-implemented blocks). Backbone
families are looked up in ``FAMILIES`` by the timm model class, which says how many levels the
model has, which four to take by default, and which feature-pyramid neck the decoder needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

import timm
import torch
from torch import nn
from timm.models.beit import Beit
from timm.models.swin_transformer import SwinTransformer
from timm.models.vision_transformer import VisionTransformer

from .config import ModelConfig
from .patch_embed import PatchEmbed3d


def plain_vit_indices(depth: int) -> List[int]:
    """Blocks depth/3, depth/2, 2*depth/3, depth (1-based): (3, 5, 7, 11) for 12, (7, 11, 15, 23) for 24."""
    return [max(round(depth * f) - 1, 0) for f in (1 / 3, 1 / 2, 2 / 3)] + [depth - 1]


def last_four_stages(num_stages: int) -> List[int]:
    """Hierarchical backbones: their native stages (all four for Swin)."""
    if num_stages < 4:
        raise ValueError(f"a hierarchical backbone needs 4 stages for UPerNet, this one has {num_stages}")
    return list(range(num_stages - 4, num_stages))


@dataclass(frozen=True)
class Family:
    """What the model builder must know about a kind of backbone."""

    name: str
    num_levels: Callable[[nn.Module], int]
    default_indices: Callable[[int], List[int]]
    neck: str  # key into upernet.NECKS


PLAIN_VIT = Family("plain_vit", lambda m: len(m.blocks), plain_vit_indices, neck="plain_vit")
HIERARCHICAL = Family("hierarchical", lambda m: len(m.layers), last_four_stages, neck="hierarchical")

# timm model class -> family; subclasses (e.g. DeiT's distilled ViT) are found through the MRO.
FAMILIES: Dict[type, Family] = {
    VisionTransformer: PLAIN_VIT,  # ViT (augreg, DINO), DeiT
    Beit: PLAIN_VIT,
    SwinTransformer: HIERARCHICAL,
}


def family_of(model: nn.Module) -> Family:
    """The family of a timm model instance, with a clear error for unsupported architectures."""
    for cls in type(model).__mro__:
        if cls in FAMILIES:
            return FAMILIES[cls]
    supported = ", ".join(c.__name__ for c in FAMILIES)
    raise ValueError(f"backbone class {type(model).__name__} is not supported; supported timm classes: {supported}")


def resolve_indices(out_indices: Optional[Sequence[int]], num_levels: int, family: Family) -> List[int]:
    """Explicit indices (negative allowed) or the family default, validated against the depth."""
    indices = family.default_indices(num_levels) if out_indices is None else list(out_indices)
    bad = [i for i in indices if not -num_levels <= i < num_levels]
    if bad:
        raise ValueError(f"out_indices {bad} out of range for a backbone with {num_levels} blocks/stages")
    return [i % num_levels for i in indices]


def create_backbone(config: ModelConfig) -> nn.Module:
    """timm.create_model at the target in-plane size, randomly initialised, without classifier."""
    kwargs = dict(pretrained=False, num_classes=0, img_size=config.image_size, drop_path_rate=config.drop_path_rate)
    kwargs.update(config.backbone_kwargs)
    return timm.create_model(config.backbone, **kwargs)


class Encoder(nn.Module):
    """(B, C, K, H, W) -> four NCHW feature maps taken from the chosen blocks/stages.

    Plain ViTs give four maps of (B, D, H/P, W/P); Swin gives its stages at strides 4, 8, 16, 32.
    """

    def __init__(self, backbone: nn.Module, family: Family, indices: List[int]):
        super().__init__()
        self.backbone = backbone
        self.family = family
        self.indices = list(indices)
        self._take = sorted(set(self.indices))  # timm returns each block once, in order
        info = backbone.feature_info
        self.out_channels = [int(info[i]["num_chs"]) for i in self.indices]
        self.reductions = [int(info[i]["reduction"]) for i in self.indices]

    @property
    def patch_embed(self) -> PatchEmbed3d:
        return self.backbone.patch_embed

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        if x.ndim != 5:
            raise ValueError(f"encoder input must be (B, C, K, H, W), got shape {tuple(x.shape)}")
        # fold (C, K) so timm's forward_intermediates sees its usual (B, C, H, W); PatchEmbed3d unfolds it
        feats = self.backbone.forward_intermediates(
            x.flatten(1, 2), indices=self._take, intermediates_only=True, output_fmt="NCHW"
        )
        by_index = dict(zip(self._take, feats))
        return [by_index[i] for i in self.indices]


def build_encoder(config: ModelConfig) -> Encoder:
    """timm backbone, pruned after the last used block, with the 3D patch embedding (random init).

    Pre-trained weights are loaded afterwards by ``pretrained.load_pretrained``.
    """
    backbone = create_backbone(config)
    family = family_of(backbone)
    indices = resolve_indices(config.out_indices, family.num_levels(backbone), family)
    # timm's own pruning drops blocks after the last tap, the final norm and the classifier head,
    # so every remaining parameter receives a gradient
    backbone.prune_intermediate_layers(indices=indices, prune_norm=True, prune_head=True)
    backbone.patch_embed = PatchEmbed3d.from_2d(backbone.patch_embed, config.in_channels, config.slices)
    return Encoder(backbone, family, indices)
