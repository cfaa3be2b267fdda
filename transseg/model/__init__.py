"""The TransSeg network: a pre-trained 2D ViT inflated to 3D with a UPerNet decoder."""

from .config import ModelConfig
from .encoder import Encoder, build_encoder
from .inflation import DEPTH_INFLATIONS, collapse_channels, inflate_patch_weight
from .network import TransSeg, build_model
from .patch_embed import PatchEmbed3d
from .pretrained import PretrainedReport, PretrainedWeightsUnavailable, load_pretrained

__all__ = [
    "DEPTH_INFLATIONS",
    "Encoder",
    "ModelConfig",
    "PatchEmbed3d",
    "PretrainedReport",
    "PretrainedWeightsUnavailable",
    "TransSeg",
    "build_encoder",
    "build_model",
    "collapse_channels",
    "inflate_patch_weight",
    "load_pretrained",
]
