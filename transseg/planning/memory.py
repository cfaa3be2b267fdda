"""The GPU-memory model that picks the batch size per GPU. An estimate, derived, not measured.

Bytes for one training step with B windows of K slices at H x W, bf16 autocast, fused attention:

    static      = 16 P + workspace               fp32 weights, gradients, AdamW's two moments
    encoder     = sum over blocks of 34 * T * w  activations kept for backward per token and width
                                                 (Korthikanti et al. 2022, without the attention
                                                 score term, which fused attention never stores)
    decoder     = 2 bytes * (H/4 * W/4) * (21 c + 2 w)   UPerNet maps kept at quarter resolution
    input       = 4 bytes * C * K * H * W
    total       = static + B * (encoder + decoder + input)

P is the encoder's plus the decoder's parameter count, T the tokens of a block, w its width, c the
decoder width. The 21 counts the quarter-resolution tensors UPerNet keeps (lateral, FPN, upsampled,
concatenated, bottleneck conv/norm/activation, dropout); lower levels add little. It has not been
calibrated on a GPU yet: treat the batch size it picks as a starting point.
"""
from __future__ import annotations

from dataclasses import dataclass

from .backbones import BackboneSpec

GIB = 1024 ** 3
WORKSPACE_BYTES = 1.0 * GIB          # CUDA context, cuDNN/cuBLAS workspaces, allocator slack
SAFETY_FRACTION = 0.9                # plan for 90 % of the target


@dataclass(frozen=True)
class MemoryEstimate:
    parameters: int
    static_bytes: float
    per_window_bytes: float

    def total_bytes(self, batch_size: int) -> float:
        return self.static_bytes + batch_size * self.per_window_bytes

    def total_gb(self, batch_size: int) -> float:
        return self.total_bytes(batch_size) / GIB


def decoder_parameter_count(backbone: BackboneSpec, decoder_channels: int, num_classes: int) -> int:
    """UPerNet: lateral 1x1, FPN 3x3, pyramid pooling, two bottleneck 3x3 convs, ViT pyramid deconvs."""
    c = decoder_channels
    widths = [s.width for s in backbone.stages] if backbone.is_hierarchical else [backbone.width] * 4
    lateral = sum(w * c for w in widths[:-1])
    fpn = 3 * 9 * c * c
    pooling = 4 * widths[-1] * c
    bottleneck = 9 * (widths[-1] + 4 * c) * c
    fusion = 9 * 4 * c * c
    deconvs = 0 if backbone.is_hierarchical else 3 * 4 * backbone.width ** 2
    return lateral + fpn + pooling + bottleneck + fusion + deconvs + c * num_classes


def estimate_memory(backbone: BackboneSpec, resolution: tuple[int, int], window_slices: int, channels: int,
                    decoder_channels: int, num_classes: int) -> MemoryEstimate:
    height, width = resolution
    parameters = backbone.parameter_count() + decoder_parameter_count(backbone, decoder_channels, num_classes)
    encoder = sum(34 * s.depth * (height // s.token_stride) * (width // s.token_stride) * s.width
                  for s in backbone.stages)
    decoder = 2 * (height // 4) * (width // 4) * (21 * decoder_channels + 2 * backbone.stages[0].width)
    model_input = 4 * channels * window_slices * height * width
    return MemoryEstimate(parameters, 16 * parameters + WORKSPACE_BYTES, encoder + decoder + model_input)


MIN_BATCH_SIZE = 2   # UPerNet's pyramid pooling normalises a 1x1 map: batch norm needs two samples


def batch_size_for_target(estimate: MemoryEstimate, target_gb: float, global_batch_size: int) -> int:
    """The largest divisor of the global batch (at least 2) whose estimate fits the target; 2 if none does."""
    budget = SAFETY_FRACTION * target_gb * GIB
    fitting = [b for b in range(MIN_BATCH_SIZE, global_batch_size + 1)
               if global_batch_size % b == 0 and estimate.total_bytes(b) <= budget]
    return max(fitting, default=min(MIN_BATCH_SIZE, global_batch_size))
