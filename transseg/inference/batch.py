"""How many windows go through the network at once when predicting, unless ``--batch_size`` says.

On a GPU, from the planner's memory model (``planning.memory``): its per-window bytes are what a
*training* step keeps for the backward pass, an upper bound of what inference needs (no activation
outlives its layer there), so a batch sized by it fits; it is sized for half the GPU memory that is
free when prediction starts (the other half: allocator slack, the tile accumulators, another
process). On a CPU, a small fixed batch: larger ones are slower per window there (BEiT/ViT-Base at
512 x 512 in bf16 on 2 cores, one series of runs: 4.4 s per window at batch 4, 5.7 at 2, 6.7 at
16; see documentation/inference.md, CPU only), and cost memory.
"""
from __future__ import annotations

import logging

import torch

from ..planning.backbones import describe_backbone
from ..planning.memory import estimate_memory
from ..planning.plans import Plans

logger = logging.getLogger(__name__)
GPU_MEMORY_FRACTION = 0.5     # of the free GPU memory the inference batch is sized for
MAX_GPU_BATCH = 64            # beyond this a forward pass is no faster per window, only bigger
CPU_BATCH = 4                 # the fastest per window measured on a CPU (module text)


def gpu_batch_size(plans: Plans, free_bytes: float) -> int:
    """The largest batch whose memory-model estimate fits ``GPU_MEMORY_FRACTION`` of ``free_bytes``."""
    data = plans.data
    estimate = estimate_memory(describe_backbone(plans.model.backbone), tuple(data.resolution), data.window_slices,
                               len(data.normalization), plans.model.decoder_channels, len(data.label_values))
    weights = 6 * estimate.parameters            # float32 weights and autocast's bf16 copies; no gradients
    budget = GPU_MEMORY_FRACTION * free_bytes - weights
    return int(max(1, min(MAX_GPU_BATCH, budget // estimate.per_window_bytes)))


def default_batch_size(plans: Plans, device: torch.device) -> int:
    """Windows per forward pass on ``device`` when the user did not choose (see the module text)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        batch = gpu_batch_size(plans, free)
        logger.debug("inference batch %d from the memory model (%.1f GiB free on %s)", batch, free / 2 ** 30, device)
        return batch
    return min(CPU_BATCH, plans.training.batch_size_per_gpu)
