"""Which torch device a command runs on (what --device asks for, checked against what the machine has), and
how many CPUs it may use."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

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


def cgroup_cpu_limit(root: Path = Path("/sys/fs/cgroup")) -> Optional[float]:
    """CPUs a container's quota allows (``docker --cpus``, Kubernetes limits); None without a quota."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]                         # cgroup v2
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())                        # cgroup v1
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return None if quota <= 0 else quota / period
    except (OSError, ValueError):
        return None


def usable_cpus() -> int:
    """The CPUs this process may run on: its affinity mask (taskset, SLURM), capped by a container's CPU quota."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:                       # not on Linux
        cpus = os.cpu_count() or 1
    limit = cgroup_cpu_limit()
    if limit is not None:
        cpus = min(cpus, max(1, int(limit + 0.5)))
    return max(1, cpus)
