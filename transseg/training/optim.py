"""AdamW with the usual no-decay set, and the paper's slanted-triangular schedule.

No weight decay on: every 1-D parameter (biases, LayerNorm/BatchNorm weights whatever they are
called, BEiT's ``q_bias``/``v_bias`` and layer-scale ``gamma_1``/``gamma_2``), position
embeddings, relative-position bias tables and learned tokens. Matching by shape and by a few
name fragments, not by a list of norm names, is what keeps BEiT's norms out of the decay set.
"""
from __future__ import annotations

import torch
from torch import nn

NO_DECAY_NAMES = ("pos_embed", "relative_position_bias_table", "cls_token", "reg_token", "dist_token",
                  "mask_token", "absolute_pos_embed")


def decays(name: str, parameter: torch.Tensor) -> bool:
    return parameter.ndim > 1 and not any(fragment in name for fragment in NO_DECAY_NAMES)


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            (decay if decays(name, parameter) else no_decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(model: nn.Module, name: str, learning_rate: float, weight_decay: float) -> torch.optim.Optimizer:
    if name != "adamw":
        raise ValueError(f"unknown optimizer '{name}'; only 'adamw' is available")
    return torch.optim.AdamW(parameter_groups(model, weight_decay), lr=learning_rate)


def warmup_linear(step: int, warmup_steps: int, total_steps: int) -> float:
    """Learning-rate factor: linear from 0 to 1 over the warm-up, then linear down to 0 at the end."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    remaining = total_steps - step
    return max(0.0, remaining / max(1, total_steps - warmup_steps))


SCHEDULES = {"warmup_linear": warmup_linear}


def make_scheduler(optimizer: torch.optim.Optimizer, name: str, warmup_steps: int,
                   total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule '{name}'; choose one of {sorted(SCHEDULES)}")
    schedule = SCHEDULES[name]
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: schedule(step, warmup_steps, total_steps))


def no_decay_names(model: nn.Module) -> list[str]:
    """Names of the parameters kept out of weight decay (for the log and the tests)."""
    return [n for n, p in model.named_parameters() if not decays(n, p)]
