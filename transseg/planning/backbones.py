"""What the planner needs to know of a backbone without building it: patch size, widths, depths.

Known timm families are read from the name (fast: no torch needed); any other name is built on
PyTorch's 'meta' device, which allocates nothing, and measured. :func:`backbone_problem` checks a
name against timm's registry (a cached copy: see :mod:`.timm_registry`).
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Optional

from .timm_registry import timm_registry

# width, depth, heads of the plain ViT sizes (BEiT, DeiT, DINO and augreg ViTs share them)
_VIT_SIZES = {"tiny": (192, 12, 3), "small": (384, 12, 6), "base": (768, 12, 12),
              "large": (1024, 24, 16), "huge": (1280, 32, 16)}
# Swin: first-stage width, depths of the four stages, first-stage heads
_SWIN_SIZES = {"tiny": (96, (2, 2, 6, 2), 3), "small": (96, (2, 2, 18, 2), 3),
               "base": (128, (2, 2, 18, 2), 4), "large": (192, (2, 2, 18, 2), 6)}


@dataclass(frozen=True)
class Stage:
    depth: int
    width: int
    heads: int
    token_stride: int      # in-plane stride of this stage's tokens relative to the input


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    patch_size: int
    stages: tuple[Stage, ...]

    @property
    def is_hierarchical(self) -> bool:
        return len(self.stages) > 1

    @property
    def width(self) -> int:
        """Width of the (last) feature map the decoder's widest input has."""
        return self.stages[-1].width

    def parameter_count(self) -> int:
        """Transformer blocks (12 w² + 13 w each: qkv, projection, 4x MLP, norms) and the patch embedding."""
        blocks = sum(s.depth * (12 * s.width ** 2 + 13 * s.width) for s in self.stages)
        merges = sum(4 * a.width * b.width for a, b in zip(self.stages, self.stages[1:]))
        embedding = 3 * self.patch_size ** 2 * self.stages[0].width
        return blocks + merges + embedding


def _from_name(name: str) -> BackboneSpec | None:
    lowered = name.lower()
    size = re.search(r"(tiny|small|base|large|huge)", lowered)
    patch = re.search(r"patch(\d+)", lowered)
    if size is None or patch is None:
        return None
    size_name, patch_size = size.group(1), int(patch.group(1))
    if lowered.startswith("swin") and size_name in _SWIN_SIZES:
        width, depths, heads = _SWIN_SIZES[size_name]
        stages = tuple(Stage(d, width * 2 ** i, heads * 2 ** i, patch_size * 2 ** i) for i, d in enumerate(depths))
        return BackboneSpec(name, patch_size, stages)
    if re.match(r"(beit|vit|deit)", lowered) and size_name in _VIT_SIZES:
        width, depth, heads = _VIT_SIZES[size_name]
        return BackboneSpec(name, patch_size, (Stage(depth, width, heads, patch_size),))
    return None


def _from_timm(name: str) -> BackboneSpec:
    import timm
    import torch

    with torch.device("meta"):
        model = timm.create_model(name.split(".")[0], pretrained=False)
    patch = model.patch_embed.proj.kernel_size[0]
    if hasattr(model, "layers"):  # hierarchical (Swin-like)
        stages = tuple(Stage(len(layer.blocks), layer.blocks[0].norm1.normalized_shape[0],
                             layer.blocks[0].attn.num_heads, patch * 2 ** i) for i, layer in enumerate(model.layers))
    else:
        stages = (Stage(len(model.blocks), model.embed_dim, model.blocks[0].attn.num_heads, patch),)
    return BackboneSpec(name, patch, stages)


@lru_cache(maxsize=None)
def describe_backbone(name: str) -> BackboneSpec:
    return _from_name(name) or _from_timm(name)


def patch_size(name: str) -> int:
    """The patch size: from the name when it says (timm names do: 'patch16'), else measured (imports torch)."""
    found = re.search(r"patch(\d+)", name.lower())
    return int(found.group(1)) if found else describe_backbone(name).patch_size


@lru_cache(maxsize=None)
def backbone_problem(name: str, family: bool = True) -> Optional[str]:
    """Why ``name`` cannot be used, or None: unknown to timm, an unknown pretrained tag, or (``family``)
    an architecture the model builder does not inflate."""
    registry = timm_registry()
    arch, _, tag = name.partition(".")
    if arch not in registry["models"]:
        close = difflib.get_close_matches(arch, registry["models"], n=3)
        hint = f" (similar names: {', '.join(close)})" if close else " (timm.list_models('vit_*') lists the names)"
        return f"timm has no model '{arch}'{hint}"
    tags = [t for t in registry["pretrained"] if t.startswith(arch + ".")]
    if tag and name not in tags:
        return f"timm has no pretrained tag '{tag}' for {arch} (it has: {', '.join(tags) or 'none'})"
    if family and arch not in registry["supported"]:
        return ("a timm model, but not a plain ViT (vit_*, deit_*, beit_*) or a Swin (swin_*), the families "
                "TransSeg can inflate to 3D")
    return None
