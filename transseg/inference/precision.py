"""Which number format the network runs in at inference: fp32, or bf16 autocast where that is fast.

On CUDA bf16 is always native. On a CPU, bf16 is only fast where the processor has bf16 instructions
(AVX512-BF16, AMX, ARMv8.6 BF16): oneDNN then runs the convolutions and matrix products in bf16 at
about twice the float32 speed. Elsewhere it emulates bf16 through float32 conversions and is
*slower* than float32, so ``auto`` picks bf16 only on a GPU or a CPU with those instructions. Only
the network runs in bf16: softmax, averaging over folds and flips, resampling and arg-max stay
float32.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import os
from pathlib import Path
from typing import Optional

import torch

from ..devices import usable_cpus
from ..paths import TranssegError

logger = logging.getLogger(__name__)
PRECISIONS = ("auto", "fp32", "bf16")
CPUINFO = "/proc/cpuinfo"
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})


@functools.lru_cache(maxsize=None)
def cpu_has_native_bf16() -> bool:
    """oneDNN runs bf16 here *and* the processor has bf16 instructions.

    oneDNN's own check accepts any AVX512 CPU, where it emulates bf16 at below float32 speed, so
    the instructions are read from the kernel's CPU flags: ``avx512_bf16`` or ``amx_bf16`` (x86),
    ``bf16`` (ARMv8.6). Without /proc/cpuinfo (macOS, Windows) the answer is no: fp32, the safe side.
    """
    try:
        if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
            return False
        text = Path(CPUINFO).read_text(errors="replace")
    except (AttributeError, RuntimeError, OSError):        # a torch without oneDNN, no cpuinfo
        return False
    flags = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags.update(value.split())
    return bool(flags & NATIVE_BF16_FLAGS)


def autocast_dtype(precision: str, device: torch.device) -> Optional[torch.dtype]:
    """The autocast dtype for ``precision`` on ``device``; None runs in float32."""
    if precision not in PRECISIONS:
        raise TranssegError(f"precision must be one of {', '.join(PRECISIONS)}, got '{precision}'.")
    if precision == "fp32":
        return None
    if precision == "bf16":
        if device.type == "cpu" and not cpu_has_native_bf16():
            logger.warning("bf16 was asked for, but this CPU has no native bf16 instructions: it is emulated and "
                           "usually slower than fp32.")
        return torch.bfloat16
    if device.type == "cuda" or (device.type == "cpu" and cpu_has_native_bf16()):
        return torch.bfloat16
    return None


def precision_name(dtype: Optional[torch.dtype]) -> str:
    return "bf16" if dtype == torch.bfloat16 else "fp32"


def autocast(device: torch.device, dtype: Optional[torch.dtype]):
    """A context that runs the network in ``dtype`` on ``device`` (a no-op for float32)."""
    if dtype is None or device.type not in ("cuda", "cpu"):
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def set_cpu_threads(threads: Optional[int] = None) -> int:
    """Torch's intra-op threads: ``threads``, else OMP_NUM_THREADS when the user set it, else ``usable_cpus()``.

    More threads than CPUs is the costly mistake: OpenMP threads then wait for each other's time slices.
    """
    if threads is None and os.environ.get("OMP_NUM_THREADS", "").strip().isdigit():
        threads = int(os.environ["OMP_NUM_THREADS"])
    threads = max(1, threads or usable_cpus())
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads


def channels_last_decoder(network: torch.nn.Module, enable: bool = True) -> torch.nn.Module:
    """Put the 2D decoder (neck and UPerNet head) in channels-last memory format, or back.

    The Predictor does it for bf16 on a CPU, where oneDNN's convolutions are faster on NHWC tensors;
    measured on a 2-core AVX512-BF16 EPYC, idle, batch 4: ViT-Base 512² 15.4 -> 13.3 s and ViT-Tiny
    160 x 144 3.05 -> 2.78 s per forward pass. In fp32 it is not used: ViT-Base 512² went 28.3 ->
    34.1 s (ViT-Tiny gained, 4.07 -> 3.49 s). Weights keep their values: only their memory layout changes.
    """
    memory_format = torch.channels_last if enable else torch.contiguous_format
    for part in (getattr(network, "neck", None), getattr(network, "head", None)):
        if part is not None:
            part.to(memory_format=memory_format)
    return network
