"""The whole network: inflated encoder -> feature pyramid neck -> UPerNet -> logits at input size."""

from __future__ import annotations

from typing import Callable, Dict, Optional

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig
from .encoder import Encoder, build_encoder
from .pretrained import PretrainedReport, load_pretrained
from .upernet import NECKS, UPerHead


def _center_logits(logits: torch.Tensor, slices: int) -> torch.Tensor:
    return logits  # (B, classes, H, W)


def _all_logits(logits: torch.Tensor, slices: int) -> torch.Tensor:
    return logits.unflatten(1, (-1, slices))  # (B, classes * K, H, W) -> (B, classes, K, H, W)


# predict mode -> (classifier outputs per class, reshape of the upsampled logits)
PREDICT_HEADS: Dict[str, tuple[Callable[[int], int], Callable[[torch.Tensor, int], torch.Tensor]]] = {
    "center": (lambda slices: 1, _center_logits),
    "all": (lambda slices: slices, _all_logits),
}


class TransSeg(nn.Module):
    """Pre-trained 2D ViT inflated to 3D with a UPerNet decoder.

    Input: x of shape (B, C, K, H, W) -- C = config.in_channels image channels, K = config.slices
    neighbouring slices (the window; the centre slice is index K // 2), (H, W) = config.image_size.
    Slice spacing (stride 1, 2, 3 in the volume) is the data side's business; the model does not see it.

    Output: raw logits (no softmax), float, at full input resolution:
      predict="center": (B, num_classes, H, W) for the centre slice;
      predict="all":    (B, num_classes, K, H, W) for every slice of the window.

    Attributes: config (ModelConfig), pretrained_report (PretrainedReport, or None for random init).
    To restore a trained model without touching the network, build it with pretrained=None and
    load its state dict.
    """

    def __init__(self, config: ModelConfig, encoder: Encoder, neck: nn.Module, head: UPerHead):
        super().__init__()
        self.config = config
        self.encoder = encoder
        self.neck = neck
        self.head = head
        self.pretrained_report: Optional[PretrainedReport] = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        expected = (cfg.in_channels, cfg.slices, *cfg.image_size)
        if x.ndim != 5 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"TransSeg expects input (B, C, K, H, W) = (B, {', '.join(map(str, expected))}), "
                             f"got {tuple(x.shape)}")
        logits = self.head(self.neck(self.encoder(x)))
        logits = F.interpolate(logits, size=cfg.image_size, mode="bilinear", align_corners=False)
        return PREDICT_HEADS[cfg.predict][1](logits, cfg.slices)


def build_model(config: ModelConfig) -> TransSeg:
    """Build the network described by ``config`` and load its pre-trained encoder weights.

    The pre-trained report is logged and kept as ``model.pretrained_report``.
    """
    encoder = build_encoder(config)
    report = load_pretrained(encoder.backbone, config)
    neck = NECKS[encoder.family.neck](encoder.out_channels)
    outputs_per_class = PREDICT_HEADS[config.predict][0](config.slices)
    head = UPerHead(
        neck.out_channels,
        config.decoder_channels,
        config.num_classes * outputs_per_class,
        dropout=config.decoder_dropout,
    )
    model = TransSeg(config, encoder, neck, head)
    model.pretrained_report = report
    return model
