"""Training-window throughput at 512 x 512, K = 5, with the paper's full augmentation.

Writes a few preprocessed CT-sized cases (float16 data, uint8 labels, memory-mappable CASE.npz),
then measures, all from the page cache:

- raw: K-slice windows read from the memory map into float32, nothing else (the ceiling);
- one core: ``WindowBatches`` items (draw, read, zoom/rotate/flip/shift in one grid_sample, label)
  in this process with one torch thread;
- loader: the torch DataLoader with N worker processes, as training runs it.

``--open_cases`` bounds the cases a worker keeps memory-mapped (each map is an open file); 1
re-opens a case for nearly every window (nnU-Net's open-per-read), the default keeps the 64 most
recently used.

    python benchmarks/dataloader.py [--cases 4] [--slices 120] [--workers 2] [--seconds 20] [--preset nnunet]
                                    [--open_cases 64]
"""
from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from transseg.inference.window_spec import WindowSpec
from transseg.planning.plans import AugmentationPlan
from transseg.preprocessing import load_case, read_window, save_case
from transseg.training.loader import MAX_OPEN_CASES, BatchLayout, WindowBatches, make_loader, training_cases
from transseg.training.sampling import forced_slots


def write_cases(folder: Path, count: int, slices: int, size: int = 512) -> list[str]:
    rng = np.random.default_rng(0)
    names = []
    for index in range(count):
        data = rng.standard_normal((1, slices, size, size), dtype=np.float32).astype(np.float16)
        seg = np.zeros((slices, size, size), np.uint8)
        seg[slices // 4: 3 * slices // 4, 150:350, 120:330] = 1
        seg[slices // 3: slices // 2, 200:260, 200:250] = 2
        locations = {str(c): np.flatnonzero((seg == c).any(axis=(1, 2))).tolist() for c in (1, 2)}
        name = f"case_{index:02d}"
        save_case(folder, name, data, seg, {"shape_after_resampling": [slices, size, size], "class_locations": locations})
        names.append(name)
    return names


def timed(function, seconds: float) -> tuple[int, float]:
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        count += function(count)
    return count, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=4)
    parser.add_argument("--slices", type=int, default=120)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--preset", choices=("paper", "nnunet"), default="paper",
                        help="training.augmentation.preset: nnunet adds nnU-Net's 2D intensity transforms")
    parser.add_argument("--open_cases", type=int, default=MAX_OPEN_CASES,
                        help="cases each worker keeps memory-mapped (1: open per read)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    spec = WindowSpec(5, 1, (512, 512))
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        names = write_cases(folder, args.cases, args.slices)
        cases = training_cases(folder, names)
        arrays = [load_case(folder, n)[0] for n in names]
        for data in arrays:                      # warm the page cache: every figure is from memory
            np.asarray(data).sum()

        rng = np.random.default_rng(1)

        def raw(_: int) -> int:
            data = arrays[int(rng.integers(len(arrays)))]
            np.asarray(read_window(data, int(rng.integers(args.slices)), 5, 1, axis=1), dtype=np.float32)
            return 1

        raw_count, raw_seconds = timed(raw, args.seconds / 2)
        layout = BatchLayout(args.batch, args.batch)
        batches = WindowBatches(folder, cases, spec, layout, augmentation=AugmentationPlan(preset=args.preset),
                                seed=0, oversampling=0.33,
                                first_step=0, steps=10 ** 6, max_open_cases=args.open_cases)
        one_count, one_seconds = timed(lambda i: len(batches[i]["image"]), args.seconds)
        loader = iter(make_loader(batches, args.workers))
        next(loader)                             # worker start-up is not throughput
        loader_count, loader_seconds = timed(lambda i: len(next(loader)["image"]), args.seconds)

    raw_rate, one_rate, loader_rate = raw_count / raw_seconds, one_count / one_seconds, loader_count / loader_seconds
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}")
    print(f"windows 512x512, K=5, float16 memory maps, augmentation: zoom 0.5-2 always, flips 0.1 per axis, "
          f"quarter turns 0.1, intensity shift 0.5, preset {args.preset}; oversampling {len(forced_slots(args.batch, 0.33))}/{args.batch}")
    print(f"{args.cases} cases, at most {args.open_cases} memory-mapped per worker")
    print(f"raw memory-map reads (no augmentation), one core: {raw_rate:8.1f} windows/s")
    print(f"augmented windows, one core:                     {one_rate:8.1f} windows/s "
          f"({one_rate / raw_rate:.2f}x the raw read rate)")
    print(f"DataLoader, {args.workers} workers:                          {loader_rate:8.1f} windows/s "
          f"({loader_rate / args.workers:.1f} per worker)")
    print(f"target >= 40 windows/s per core: {'met' if one_rate >= 40 else 'NOT met'}")


if __name__ == "__main__":
    main()
