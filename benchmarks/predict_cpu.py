"""CPU inference settings measured on the network alone: precision, channels-last, threads, batch, compile.

For each backbone it builds the inflated network (random weights: the cost does not depend on
them), feeds it windows cut from a real CT scan (``../shared/data/real``, resized in-plane to the
input size; noise if the scan is missing) and times ``network(windows)`` + softmax per window,
alternating the settings so that drifting load hits them all alike. Agreement is the fraction of
voxels whose arg-max class equals the float32 one, over every window measured.

    python benchmarks/predict_cpu.py                                       # ViT-Tiny 128² and ViT-Base 512²
    python benchmarks/predict_cpu.py --rows base --batches 1 2 4 --compile
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from measure import machine

from transseg.inference.precision import (autocast, channels_last_decoder, cpu_has_native_bf16, set_cpu_threads,
                                          usable_cpus)
from transseg.model import ModelConfig, build_model

ROWS = {   # name -> (backbone, input size, decoder channels, windows per setting and repeat)
    "tiny": ("vit_tiny_patch16_224", 128, 192, 16),
    "base": ("vit_base_patch16_224", 512, 768, 2),
}
REAL_CT = Path(__file__).resolve().parents[2] / "shared" / "data" / "real" / "sub-ct_label-22_ct.nii.gz"


@dataclass(frozen=True)
class Setting:
    name: str
    dtype: torch.dtype | None
    channels_last: bool = False


SETTINGS = {
    "fp32": Setting("fp32", None),
    "fp32+cl": Setting("fp32+channels-last", None, True),
    "bf16": Setting("bf16", torch.bfloat16),
    "bf16+cl": Setting("bf16+channels-last", torch.bfloat16, True),
}


def windows_from_scan(count: int, size: int, slices: int = 5) -> torch.Tensor:
    """(count, 1, K, size, size) windows of a real CT (clipped to [-175, 250], scaled to [-1, 1])."""
    if not REAL_CT.is_file():
        return torch.rand(count, 1, slices, size, size) * 2 - 1
    import SimpleITK as sitk
    volume = sitk.GetArrayFromImage(sitk.ReadImage(str(REAL_CT))).astype(np.float32)   # (Z, Y, X)
    volume = (np.clip(volume, -175, 250) + 175) / 425 * 2 - 1
    centres = np.linspace(slices, volume.shape[0] - slices - 1, count).astype(int)
    stack = np.stack([volume[c - slices // 2:c + slices // 2 + 1] for c in centres])        # (count, K, Y, X)
    resized = F.interpolate(torch.from_numpy(stack), size=(size, size), mode="bilinear", align_corners=False)
    return resized[:, None].contiguous()


def build(row: str) -> torch.nn.Module:
    backbone, size, decoder, _ = ROWS[row]
    torch.manual_seed(0)
    config = ModelConfig(backbone=backbone, pretrained=None, image_size=(size, size), slices=5, num_classes=4,
                         decoder_channels=decoder)
    return build_model(config).eval()


@torch.no_grad()
def run_setting(network, windows: torch.Tensor, setting: Setting, batch: int) -> tuple[float, torch.Tensor]:
    """Seconds for all windows and their arg-max classes."""
    channels_last_decoder(network, setting.channels_last)
    classes, start = [], time.perf_counter()
    for first in range(0, windows.shape[0], batch):
        with autocast(torch.device("cpu"), setting.dtype):
            logits = network(windows[first:first + batch])
        classes.append(torch.softmax(logits.float(), dim=1).argmax(1))
    return time.perf_counter() - start, torch.cat(classes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, nargs="+", default=None,
                        help="torch thread counts to compare (default: the CPUs this process may use)")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (bf16), with its warm-up")
    args = parser.parse_args()
    print(f"machine: {machine()}; torch {torch.__version__}; oneDNN bf16: {cpu_has_native_bf16()}; "
          f"usable CPUs {usable_cpus()}, torch default threads {torch.get_num_threads()}")
    for row in args.rows:
        network = build(row)
        backbone, size, _, count = ROWS[row]
        windows = windows_from_scan(count, size)
        for threads in args.threads or [usable_cpus()]:
            set_cpu_threads(threads)
            for batch in args.batches:
                for name in args.settings:                                                # warm-up (oneDNN kernels)
                    run_setting(network, windows[:batch], SETTINGS[name], batch)
                times = {name: [] for name in args.settings}
                reference = None
                agreement = {}
                for _ in range(args.repeat):
                    for name in args.settings:
                        seconds, classes = run_setting(network, windows, SETTINGS[name], batch)
                        times[name].append(seconds / count)
                        if name == "fp32":
                            reference = classes
                        elif reference is not None:
                            agreement[name] = float((classes == reference).float().mean())
                fp32 = statistics.median(times["fp32"]) if "fp32" in times else None
                for name in args.settings:
                    per_window = statistics.median(times[name])
                    speed = f"{fp32 / per_window:.2f}x fp32" if fp32 else ""
                    agree = f", {agreement[name] * 100:.3f} % voxels as fp32" if name in agreement else ""
                    print(f"{row:4s} {backbone} {size}² K=5 threads {threads} batch {batch}: {SETTINGS[name].name:20s} "
                          f"{per_window:7.3f} s/window {speed}{agree}")
        if args.compile:
            compiled_report(network, windows, args.batches[0])
        channels_last_decoder(network, False)


def compiled_report(network, windows: torch.Tensor, batch: int) -> None:
    compiled = torch.compile(network)
    start = time.perf_counter()
    run_setting(compiled, windows[:batch], SETTINGS["bf16"], batch)
    warmup = time.perf_counter() - start
    eager, _ = run_setting(network, windows, SETTINGS["bf16"], batch)
    fast, _ = run_setting(compiled, windows, SETTINGS["bf16"], batch)
    count = windows.shape[0]
    print(f"torch.compile (bf16, batch {batch}): warm-up {warmup:.1f} s; {fast / count:.3f} s/window against eager "
          f"{eager / count:.3f} ({eager / fast:.2f}x)")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
