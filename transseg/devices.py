"""Which torch device a command runs on: what --device asks for, checked against what the machine has."""
from __future__ import annotations

import torch

from .paths import TranssegError


def resolve_device(kind: str) -> torch.device:
    """'auto' -> CUDA when available, else CPU; 'cuda' without a GPU is an error the user can fix."""
    if kind not in ("auto", "cuda", "cpu"):
        raise TranssegError(f"--device must be auto, cuda or cpu, got '{kind}'.")
    if kind == "cuda" and not torch.cuda.is_available():
        raise TranssegError("--device cuda was asked for, but PyTorch sees no CUDA GPU on this machine "
                            "(check nvidia-smi and that the installed torch is a CUDA build), or use --device cpu.")
    if kind == "auto":
        kind = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(kind)
