"""Parameter and compute counts for the model-info table.

Two FLOP figures, labelled apart because they count different things:
- encoder, paper method: 2 x torchprofile MACs of the encoder alone with a 1-channel input, the
  way the original code printed "2D FLOPS: 213343401984" / "3D FLOPS: 214954014720";
- whole model (encoder + neck + UPerNet): torch.utils.flop_counter.FlopCounterMode.
torchprofile is an optional extra (``pip install transseg[flops]``) needed only for the first.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .config import ModelConfig
from .network import TransSeg, build_model

logger = logging.getLogger(__name__)


@dataclass
class ModelInfoRow:
    """One row of the table: a backbone at one slice count."""

    slices: int
    encoder_params: int
    model_params: int
    encoder_flops_paper: Optional[int]  # None when torchprofile is not installed
    model_flops: int


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


class _TupleOutput(nn.Module):
    """torch.jit.trace (used by torchprofile) wants tuple outputs, the encoder returns a list."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        return tuple(self.module(x))


def _window_input(config: ModelConfig) -> torch.Tensor:
    return torch.zeros(1, config.in_channels, config.slices, *config.image_size)


@contextlib.contextmanager
def explicit_attention(module: nn.Module) -> Iterator[None]:
    """Run timm attention on its explicit path (q * scale, q @ k, softmax, @ v) instead of the fused kernel.

    Same maths; the original code ran the explicit path, and torchprofile counts the ``q * scale``
    multiply there (12 x tokens x width MACs for BEiT-Base) but not inside the fused kernel.
    """
    flipped = [m for m in module.modules() if getattr(m, "fused_attn", False)]
    for m in flipped:
        m.fused_attn = False
    try:
        yield
    finally:
        for m in flipped:
            m.fused_attn = True


def encoder_flops_paper(model: TransSeg) -> int:
    """2 x torchprofile MACs of the encoder alone (the paper's figure)."""
    try:
        from torchprofile import profile_macs
    except ImportError as err:
        raise ImportError(
            "encoder FLOPs (paper method) need torchprofile: pip install torchprofile (or transseg[flops])"
        ) from err
    encoder = _TupleOutput(model.encoder).eval()
    with torch.no_grad(), explicit_attention(encoder), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about python control flow in timm
        macs = profile_macs(encoder, _window_input(model.config))
    return 2 * int(macs)


def model_flops(model: TransSeg) -> int:
    """FLOPs of one forward pass of the whole model, counted by torch's flop counter."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.eval()(_window_input(model.config))
    return int(counter.get_total_flops())


def model_info(
    backbone: str,
    resolution: Tuple[int, int],
    slices: Sequence[int],
    decoder_channels: int = 768,
    num_classes: int = 2,
    in_channels: int = 1,
    backbone_kwargs: Optional[Dict[str, Any]] = None,
) -> List[ModelInfoRow]:
    """Count parameters and FLOPs for each slice count (random weights: counting needs no download)."""
    rows = []
    for k in slices:
        config = ModelConfig(
            backbone=backbone,
            pretrained=None,
            in_channels=in_channels,
            num_classes=num_classes,
            image_size=tuple(resolution),
            slices=k,
            decoder_channels=decoder_channels,
            backbone_kwargs=dict(backbone_kwargs or {}),
        )
        model = build_model(config).eval()
        try:
            paper = encoder_flops_paper(model)
        except ImportError as err:
            logger.warning("%s", err)
            paper = None
        rows.append(ModelInfoRow(k, count_parameters(model.encoder), count_parameters(model), paper, model_flops(model)))
    return rows


HEADER = (
    "| slices | params encoder | params model | encoder FLOPs, paper method (2 x torchprofile MACs) "
    "| whole-model FLOPs (torch flop_counter) |"
)


def format_table(rows: Sequence[ModelInfoRow]) -> str:
    """Markdown table, one row per slice count."""
    lines = [HEADER, "|---:|---:|---:|---:|---:|"]
    for r in rows:
        paper = "n/a (install torchprofile)" if r.encoder_flops_paper is None else (
            f"{r.encoder_flops_paper} ({r.encoder_flops_paper / 1e9:.2f} G)"
        )
        lines.append(
            f"| {r.slices} | {r.encoder_params / 1e6:.2f} M | {r.model_params / 1e6:.2f} M | {paper} "
            f"| {r.model_flops / 1e9:.2f} G |"
        )
    return "\n".join(lines)
