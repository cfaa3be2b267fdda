"""transseg_predict end to end against the pure forward passes over the same windows (target <= 1.10x).

Builds the example task with larger test cases, plans and preprocesses it for a backbone, trains
fold 'all' for one step (the weights do not change the cost), then:

- end to end: ``transseg_predict -i imagesTs -o OUT -m MODEL`` as a subprocess, wall time and the
  peak memory of its process tree (preprocessing workers and export threads included);
- model only: the same cases preprocessed beforehand (untimed), every window batch built beforehand
  (untimed), and only ``network(windows)`` + softmax timed, batch by batch as the predictor runs them.

Each end-to-end run is split with the times the command logs: loading the model, the cases (first
read to last write), and the rest, which is starting Python, importing torch and timm, and exiting:
a fixed cost per command, which a run over many cases spreads thin.

    python benchmarks/predict.py [--cases 8] [--size 160 144] [--slices 60 90] [--device cpu]
    python benchmarks/predict.py --precision fp32 bf16                      # CPU precision, ViT-Tiny
    python benchmarks/predict.py --precision fp32 bf16 --backbone vit_base_patch16_224 --cases 1 \
        --size 512 512 --slices 6 6 --repeat 1                             # the Base row (512², a few slices)

With ``--precision fp32 bf16`` it also prints the end-to-end speed-up and the fraction of voxels
whose label is the same in both.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from measure import gib, machine, timed

from transseg.example import ExampleSettings, make_example_task
from transseg.inference.inputs import input_cases, preprocess_input
from transseg.inference.batch import default_batch_size
from transseg.inference.trained_model import load_trained_model
from transseg.inference.heap import keep_freed_memory
from transseg.inference.in_memory import Predictor
from transseg.inference.precision import autocast
from transseg.inference.volume import tile_starts, window_batch
from transseg.inference.window_spec import PAD_VALUE


def run(command: list[str], env: dict) -> None:
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")


def network_inputs(windows: torch.Tensor, spec, step: float) -> list[torch.Tensor]:
    """The tiles the predictor feeds the network for a batch of windows (padded with -1 where smaller)."""
    height, width = spec.resolution
    pad_y, pad_x = max(0, height - windows.shape[-2]), max(0, width - windows.shape[-1])
    windows = F.pad(windows, (pad_x // 2, pad_x - pad_x // 2, pad_y // 2, pad_y - pad_y // 2), value=PAD_VALUE)
    return [windows[..., y:y + height, x:x + width].contiguous()
            for y in tile_starts(windows.shape[-2], height, step) for x in tile_starts(windows.shape[-1], width, step)]


def model_seconds(predictor: Predictor, cases) -> tuple[float, int]:
    """Seconds of network forward + softmax over every tile of every window of every case, with the networks
    set up, batched and cast as the predictor runs them; the window count."""
    device, settings = predictor.device, predictor.settings
    total, windows = 0.0, 0
    for case in cases:
        data, _ = preprocess_input(case, predictor.model.plans.data)
        for model in predictor.models:
            for z0 in range(0, data.shape[1], settings.batch_size):
                batch = torch.from_numpy(window_batch(data, range(z0, min(data.shape[1], z0 + settings.batch_size)),
                                                      model.spec)).to(device)
                tiles = network_inputs(batch, model.spec, settings.tile_step)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                start = time.perf_counter()
                with torch.no_grad(), autocast(device, settings.autocast):
                    for tile in tiles:
                        torch.softmax(model.network(tile).float(), dim=1)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                total += time.perf_counter() - start
                windows += batch.shape[0]
    return total, windows


def warm_start(model_folder: Path) -> None:
    """Page the checkpoints and torch's libraries in, so every run starts alike: this machine's memory
    reclaim drops files idle for a while, and a cold start cost up to a minute more (a disk figure)."""
    for checkpoint in sorted(model_folder.glob("fold_*/checkpoint_final.pt")):
        with open(checkpoint, "rb") as stream:
            while stream.read(2 ** 24):
                pass
    subprocess.run([sys.executable, "-c", "import transseg.inference.entrypoints"], check=True)


def logged_seconds(log: Path) -> dict[str, float]:
    """The model loading and case seconds that transseg_predict logged."""
    text = log.read_text()
    return {"model": float(re.search(r"loaded in ([0-9.]+) s", text).group(1)),
            "cases": float(re.search(r"Predicted .* in ([0-9.]+) s\.", text).group(1))}


def voxel_agreement(first: Path, second: Path) -> tuple[int, int]:
    """Voxels with the same label in two folders of predictions, and the voxel count."""
    import SimpleITK as sitk
    same = total = 0
    for path in sorted(first.glob("*.nii.gz")):
        a, b = (sitk.GetArrayFromImage(sitk.ReadImage(str(p))) for p in (path, second / path.name))
        same, total = same + int((a == b).sum()), total + a.size
    return same, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=8)
    parser.add_argument("--size", type=int, nargs=2, default=[160, 144], metavar=("Y", "X"))
    parser.add_argument("--slices", type=int, nargs=2, default=[60, 90], metavar=("MIN", "MAX"))
    parser.add_argument("--backbone", default="vit_tiny_patch16_224")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--repeat", type=int, default=3, help="end-to-end runs per configuration (median reported)")
    parser.add_argument("--precision", nargs="+", default=["auto"], choices=("auto", "fp32", "bf16"),
                        help="transseg_predict --precision values to compare (with fp32 and bf16: voxel agreement)")
    parser.add_argument("--batch_size", type=int, help="transseg_predict --batch_size (default: its own)")
    parser.add_argument("--memory_only", action="store_true",
                        help="one end-to-end run for its peak memory; no model-only pass, no -npp 2 run")
    parser.add_argument("--defaults_only", action="store_true", help="no extra -npp 2 -nps 2 run")
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="transseg_predict_bench_"))
    roots = {kind: work / kind for kind in ("raw", "preprocessed", "results")}
    env = {**os.environ, **{f"TRANSSEG_{kind}": str(path) for kind, path in roots.items()}}
    model_folder = roots["results"] / "Dataset077_Bench" / "plans"
    task = roots["raw"] / "Task77_Bench"
    bin_folder = Path(sys.executable).parent
    if not (model_folder / "fold_all" / "checkpoint_final.pt").is_file():     # else: --workdir of an earlier run
        task = make_example_task(roots["raw"], ExampleSettings(task_id=77, name="Bench", num_training=2,
                                                               num_test=args.cases, in_plane=tuple(args.size),
                                                               slices=tuple(args.slices), spacing=(0.8, 0.8, 2.5)))
        run([str(bin_folder / "transseg_plan_and_preprocess"), "-d", "77", "-np", "2", "--backbone", args.backbone,
             "--min_resolution", "64", "--no_pretrained"], env)
        run([str(bin_folder / "transseg_train"), "77", "all", "--steps", "1", "--batch_size", "2", "--device",
             args.device, "--set", "training.loader_workers=0"], env)
    output = work / "predictions"
    command = [str(bin_folder / "transseg_predict"), "-i", str(task / "imagesTs"), "-m", str(model_folder),
               "--device", args.device]
    if args.batch_size:
        command += ["--batch_size", str(args.batch_size)]
    precisions = args.precision
    configurations = [(f"--precision {p}", p, ["--precision", p]) for p in precisions]
    if not (args.memory_only or args.defaults_only) and len(precisions) == 1:    # comparing precisions: those runs only
        configurations.append((f"--precision {precisions[0]} -npp 2 -nps 2", precisions[0],
                               ["--precision", precisions[0], "-npp", "2", "-nps", "2"]))
    repeats = 1 if args.memory_only else args.repeat

    device = torch.device(args.device)
    if device.type == "cpu":
        keep_freed_memory()              # as transseg_predict does on a CPU
    model = load_trained_model(model_folder, device=device)
    cases = input_cases(task / "imagesTs", model.num_channels)
    batch = args.batch_size or default_batch_size(model.plans, device)     # the batch transseg_predict uses
    measured: dict[str, list[dict]] = {name: [] for name, _, _ in configurations}
    passes: dict[str, list[float]] = {p: [] for p in ([] if args.memory_only else precisions)}
    windows = 0
    for attempt in range(repeats):     # end-to-end runs and network passes alternate: drifting speed hits all
        for name, _, extra in configurations:
            folder = output / f"{name.replace(' ', '_')}_{attempt}"
            warm_start(model_folder)
            measured[name].append(timed([*command, "-o", str(folder), *extra], env, work / "predict.log",
                                        interval=0.25, pss=False))
            measured[name][-1].update(logged_seconds(work / "predict.log"))
        for precision in passes:
            predictor = Predictor.from_trained_model(model, device, precision=precision, batch_size=batch)
            seconds, windows = model_seconds(predictor, cases)
            passes[precision].append(seconds)
    runs = {name: sorted(results, key=lambda r: r["seconds"])[len(results) // 2] for name, results in measured.items()}
    spreads = {name: [round(r["seconds"], 1) for r in results] for name, results in measured.items()}
    pure = {precision: float(np.median(seconds)) for precision, seconds in passes.items()}
    for precision, seconds in passes.items():
        print(f"model forward passes only, --precision {precision}: median {pure[precision]:.2f} s of "
              f"{[round(s, 1) for s in seconds]} ({pure[precision] / windows:.3f} s/window)")
    largest = max(cases, key=lambda c: c.images[0].stat().st_size)
    data, properties = preprocess_input(largest, model.plans.data)
    original = int(np.prod(properties["geometry"]["size"])) * 2
    probabilities = data[0].size * len(model.plans.data.label_values) * 2

    print(f"machine: {machine()}; torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}")
    print(f"{len(cases)} cases, {windows} windows, {args.backbone} at {model.plans.data.resolution}, "
          f"batch {batch}; largest case {properties['geometry']['size']} (int16 {gib(original)}), preprocessed "
          f"{list(data.shape)}, float16 probabilities {gib(probabilities)}")
    for name, precision, _ in configurations:
        run_ = runs[name]
        ratio = (f" = {run_['seconds'] / pure[precision]:.3f}x the model (run by run "
                 f"{[round(r['seconds'] / m, 3) for r, m in zip(measured[name], passes[precision])]})"
                 if precision in pure else "")
        per_window = f", {run_['seconds'] / windows:.3f} s/window end to end" if windows else ""
        print(f"transseg_predict {name:32s}: median {run_['seconds']:.2f} s of {spreads[name]}{ratio}{per_window}; "
              f"peak tree RSS {gib(run_['peak_rss'])} (largest process {gib(run_['peak_single_rss'])})")
        cases_ratio = f" = {run_['cases'] / pure[precision]:.3f}x the model" if precision in pure else ""
        fixed = [round(r["seconds"] - r["model"] - r["cases"], 1) for r in measured[name]]
        start_up = run_["seconds"] - run_["model"] - run_["cases"]
        print(f"    of which: Python start-up, imports and exit {start_up:.1f} s, "
              f"loading the model {run_['model']:.2f} s, the cases {run_['cases']:.2f} s{cases_ratio} (runs: start-up "
              f"and exit {fixed}, cases {[round(r['cases'], 1) for r in measured[name]]})")
    if "fp32" in precisions and "bf16" in precisions:
        same, total = voxel_agreement(output / "--precision_fp32_0", output / "--precision_bf16_0")
        speed = runs["--precision fp32"]["seconds"] / runs["--precision bf16"]["seconds"]
        print(f"bf16 against fp32: {speed:.2f}x faster end to end; {100 * same / total:.3f} % of {total} voxels "
              f"identical")
    print(f"work folder: {work}")


if __name__ == "__main__":
    main()
