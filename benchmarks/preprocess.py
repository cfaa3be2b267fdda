"""Benchmark: transseg_plan_and_preprocess against nnUNetv2_plan_and_preprocess -c 2d on the same data.

Builds an MSD-layout CT-like task (the example generator: 10 cases of 512x512x40-80 slices by
default), converts it to nnU-Net's layout (untimed), then runs both complete commands as
subprocesses with the same -np, measuring wall time and the peak memory of the whole process tree
(RSS summed over all processes, sampled every 50 ms; PSS too, which counts shared pages once).
Then it checks that the outputs mean the same thing: identical crop boxes and resampled shapes,
our normalised values against an independent reference (scipy.ndimage.zoom + clip/scale in
float64) within float16 precision, and both pipelines' intensities mapped back to HU.

nnU-Net is not a dependency of TransSeg: install it in a scratch environment, e.g.
``python -m venv --system-site-packages /tmp/nn && /tmp/nn/bin/pip install nnunetv2``, and pass
``--nnunet_bin /tmp/nn/bin``. Run: ``python benchmarks/preprocess.py --nnunet_bin /tmp/nn/bin``.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Optional

import numpy as np

from measure import gib, machine, timed

TASK_ID = 42
TARGET_SPEEDUP = 5.0
_NNUNET_DUMP = r"""
import json, pickle, sys
from pathlib import Path
import numpy as np
folder, out, wanted = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3].split(",")
def load(stem):
    b2nd = folder / (stem + ".b2nd")
    if b2nd.is_file():
        import blosc2
        return blosc2.open(urlpath=str(b2nd), mode="r")[:]
    return np.load(folder / (stem.replace("_seg", "") + ".npz"))["seg" if stem.endswith("_seg") else "data"]
summary = {}
for pkl in sorted(folder.glob("*.pkl")):
    name = pkl.stem
    with open(pkl, "rb") as handle:
        props = pickle.load(handle)
    data, seg = load(name), load(name + "_seg")
    summary[name] = {"bbox": [[int(a), int(b)] for a, b in props["bbox_used_for_cropping"]],
                     "shape_before_cropping": [int(s) for s in props["shape_before_cropping"]],
                     "data_shape": [int(s) for s in data.shape],
                     "class_voxels": np.bincount(seg[seg >= 0].ravel().astype(np.int64)).tolist()}
    if name in wanted:
        np.save(out / (name + "_data.npy"), data.astype(np.float32))
        np.save(out / (name + "_seg.npy"), seg)
(out / "summary.json").write_text(json.dumps(summary))
"""


def warm(files: list[Path]) -> None:
    """Read the inputs once so both tools start from the same (warm) page cache."""
    for path in files:
        with open(path, "rb") as handle:
            while handle.read(1 << 24):
                pass


# ------------------------------------------------------------------------------------------- the runs
def environments(work: Path) -> tuple[dict, dict]:
    ours = {**os.environ, "TRANSSEG_raw": str(work / "raw"), "TRANSSEG_preprocessed": str(work / "transseg_pre")}
    theirs = {**os.environ, "nnUNet_raw": str(work / "nnunet_raw"), "nnUNet_preprocessed": str(work / "nnunet_pre"),
              "nnUNet_results": str(work / "nnunet_results")}
    for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        Path(theirs[key]).mkdir(parents=True, exist_ok=True)
    return ours, theirs


def script(name: str, folder: Optional[Path]) -> str:
    found = (folder / name) if folder else shutil.which(name)
    if found is None or not Path(found).exists():
        raise SystemExit(f"{name} not found (use --nnunet_bin)" if folder or name.startswith("nnUNet") else
                         f"{name} not found; pip install -e . first")
    return str(found)


def run_ours(work: Path, env: dict, processes: int) -> dict:
    shutil.rmtree(work / "transseg_pre", ignore_errors=True)
    warm(sorted((work / "raw").rglob("*.nii.gz")))
    return timed([script("transseg_plan_and_preprocess", None), "-d", str(TASK_ID), "-np", str(processes)],
                 env, work / "transseg.log")


def run_nnunet(work: Path, env: dict, processes: int, nnunet_bin: Path) -> dict:
    shutil.rmtree(work / "nnunet_pre", ignore_errors=True)
    (work / "nnunet_pre").mkdir()
    warm(sorted((work / "nnunet_raw").rglob("*.nii.gz")))
    return timed([script("nnUNetv2_plan_and_preprocess", nnunet_bin), "-d", str(TASK_ID), "-c", "2d",
                  "-np", str(processes)], env, work / "nnunet.log")


# ------------------------------------------------------------------------------------- output agreement
def reference_case(image_file: Path, properties: dict) -> np.ndarray:
    """Our pipeline re-done independently: crop, scipy zoom (order 1), clip/scale in float64."""
    import SimpleITK as sitk
    from scipy import ndimage
    image = sitk.GetArrayFromImage(sitk.ReadImage(str(image_file))).astype(np.float64)
    box = properties["bbox"]
    cropped = image[tuple(slice(a, b) for a, b in box)]
    target = properties["shape_after_resampling"]
    zoom = [t / s for t, s in zip(target, cropped.shape)]
    resampled = ndimage.zoom(cropped, zoom, order=1, mode="nearest", grid_mode=True)
    window = properties["normalization"][0]
    low, high = window["low"], window["high"]
    return (np.clip(resampled, low, high) - low) / (high - low) * 2 - 1


def compare_outputs(work: Path, nnunet_bin: Path, value_cases: int = 2) -> list[tuple[str, str, bool]]:
    from transseg.preprocessing import load_case
    ours_folder = next((work / "transseg_pre").glob(f"Dataset{TASK_ID:03d}_*")) / "plans"
    theirs_folder = next((work / "nnunet_pre").glob(f"Dataset{TASK_ID:03d}_*"))
    dump = work / "nnunet_dump"
    shutil.rmtree(dump, ignore_errors=True)
    dump.mkdir()
    names = sorted(p.stem for p in ours_folder.glob("*.json"))
    wanted = names[:value_cases]
    subprocess.run([str(nnunet_bin / "python"), "-c", _NNUNET_DUMP, str(theirs_folder / "nnUNetPlans_2d"),
                    str(dump), ",".join(wanted)], check=True)
    theirs = json.loads((dump / "summary.json").read_text())
    plans = json.loads((theirs_folder / "nnUNetPlans.json").read_text())
    stats = plans["foreground_intensity_properties_per_channel"]["0"]
    rows = []
    boxes = shapes = 0
    for name in names:
        _, _, props = load_case(ours_folder, name)
        boxes += props["bbox"] == theirs[name]["bbox"]
        shapes += props["shape_after_resampling"] == theirs[name]["data_shape"][1:]
    rows.append(("crop box identical", f"{boxes}/{len(names)} cases", boxes == len(names)))
    rows.append(("resampled shape identical", f"{shapes}/{len(names)} cases", shapes == len(names)))
    for name in wanted:
        data, seg, props = load_case(ours_folder, name, mmap=False)
        reference = reference_case(Path(props["images"][0]), props)
        error = float(np.abs(data[0].astype(np.float64) - reference).max())
        rows.append((f"{name}: ours vs independent reference, max |diff|", f"{error:.2e}", error <= 2e-3))
        window = props["normalization"][0]
        ours_hu = (data[0].astype(np.float64) + 1) / 2 * (window["high"] - window["low"]) + window["low"]
        their_data = np.load(dump / f"{name}_data.npy")[0].astype(np.float64)
        their_hu = their_data * stats["std"] + stats["mean"]
        inside = ((ours_hu > window["low"] + 1) & (ours_hu < window["high"] - 1)
                  & (their_hu > window["low"] + 1) & (their_hu < window["high"] - 1))
        difference = float(np.median(np.abs(ours_hu - their_hu)[inside]))
        rows.append((f"{name}: HU ours (linear) vs nnU-Net (cubic), median |diff| in window",
                     f"{difference:.2f} HU", difference < 5.0))
        their_seg = np.load(dump / f"{name}_seg.npy")[0]
        agreement = float((their_seg == seg).mean())
        rows.append((f"{name}: label agreement (nearest vs nnU-Net linear one-hot)", f"{agreement:.4%}",
                     agreement > 0.99))
    return rows


# ---------------------------------------------------------------------------------------------- report
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nnunet_bin", type=Path, default=None, help="folder holding nnUNetv2_* scripts and python")
    parser.add_argument("--workdir", type=Path, default=None, help="keep data here (default: a temporary folder)")
    parser.add_argument("--cases", type=int, default=10)
    parser.add_argument("--slices", type=int, nargs=2, default=(40, 80))
    parser.add_argument("--in_plane", type=int, default=512)
    parser.add_argument("-np", "--num_processes", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=1, help="alternate the two runs this many times; medians")
    parser.add_argument("--skip_nnunet", action="store_true", help="time TransSeg only")
    args = parser.parse_args()
    if args.nnunet_bin is None and not args.skip_nnunet:
        found = shutil.which("nnUNetv2_plan_and_preprocess")
        if found is None:
            parser.error("nnUNetv2_plan_and_preprocess not on PATH: pass --nnunet_bin or --skip_nnunet")
        args.nnunet_bin = Path(found).parent

    from transseg.example import ExampleSettings, make_example_task
    temporary = None if args.workdir else tempfile.TemporaryDirectory(prefix="transseg_bench_")
    work = args.workdir or Path(temporary.name)
    work.mkdir(parents=True, exist_ok=True)
    settings = ExampleSettings(task_id=TASK_ID, name="BenchCT", num_training=args.cases, num_test=0,
                               in_plane=(args.in_plane, args.in_plane), slices=tuple(args.slices), seed=0)
    task = work / "raw" / settings.folder_name
    if not (task / "dataset.json").is_file():
        print(f"writing {args.cases} cases to {task} ...", flush=True)
        make_example_task(work / "raw", settings)
    (task / "imagesTs").mkdir(exist_ok=True)   # nnU-Net's converter insists on the folder
    ours_env, theirs_env = environments(work)
    if not args.skip_nnunet and not any((work / "nnunet_raw").glob(f"Dataset{TASK_ID:03d}_*")):
        subprocess.run([script("nnUNetv2_convert_MSD_dataset", args.nnunet_bin), "-i", str(task), "-np",
                        str(args.num_processes)], check=True, env=theirs_env, capture_output=True)

    voxels = sum(int(np.prod(__import__("SimpleITK").ReadImage(str(p)).GetSize()))
                 for p in sorted((task / "imagesTr").glob("*.nii.gz")))
    print(f"machine: {machine()}")
    print(f"data: {args.cases} CT cases, {args.in_plane}x{args.in_plane}x{args.slices[0]}-{args.slices[1]}, "
          f"{voxels / 1e6:.0f} M voxels; -np {args.num_processes}; load average before: {os.getloadavg()[0]:.2f}")
    ours, theirs = [], []
    for _ in range(args.repeat):
        ours.append(run_ours(work, ours_env, args.num_processes))
        print(f"  transseg: {ours[-1]['seconds']:.2f} s, peak RSS {gib(ours[-1]['peak_rss'])}", flush=True)
        if not args.skip_nnunet:
            theirs.append(run_nnunet(work, theirs_env, args.num_processes, args.nnunet_bin))
            print(f"  nnU-Net:  {theirs[-1]['seconds']:.2f} s, peak RSS {gib(theirs[-1]['peak_rss'])}", flush=True)
    print(f"load average after: {os.getloadavg()[0]:.2f}")

    def median(runs, key):
        return statistics.median(r[key] for r in runs)

    print()
    print(f"{'':32}{'wall time':>12}{'peak RSS (tree)':>18}{'peak PSS (tree)':>18}"
          f"{'largest process':>18}{'processes':>11}")
    for label, runs in (("transseg_plan_and_preprocess", ours), ("nnUNetv2_plan_and_preprocess 2d", theirs)):
        if runs:
            print(f"{label:32}{median(runs, 'seconds'):>10.2f} s{gib(median(runs, 'peak_rss')):>18}"
                  f"{gib(median(runs, 'peak_pss')):>18}{gib(median(runs, 'peak_single_rss')):>18}"
                  f"{max(r['processes'] for r in runs):>11}")
    if args.skip_nnunet:
        return 0
    speedup = median(theirs, "seconds") / median(ours, "seconds")
    memory = median(ours, "peak_rss") / median(theirs, "peak_rss")
    memory_pss = median(ours, "peak_pss") / median(theirs, "peak_pss")
    print(f"speed-up (nnU-Net time / ours): {speedup:.1f}x   (target >= {TARGET_SPEEDUP:g}x)")
    print(f"peak memory ours / nnU-Net: RSS {memory:.2f}, PSS {memory_pss:.2f}   (target <= 1)")
    print()
    print("output agreement:")
    rows = compare_outputs(work, args.nnunet_bin)
    for what, value, ok in rows:
        print(f"  [{'ok' if ok else 'DIFFERENT'}] {what}: {value}")
    met = speedup >= TARGET_SPEEDUP and memory <= 1.0 and all(ok for _, _, ok in rows)
    print(f"\ntarget {'met' if met else 'NOT met'}")
    if temporary is not None:
        temporary.cleanup()
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
