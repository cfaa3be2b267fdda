"""Compare our fingerprint with nnU-Net v2's on the same data: spacings, shapes after crop, percentiles.

nnU-Net is not a dependency: install it in a scratch environment and point --nnunet_bin at its
scripts, e.g. ``python -m venv --system-site-packages /tmp/nn && /tmp/nn/bin/pip install nnunetv2``.
Run: ``python benchmarks/compare_fingerprint_nnunet.py --nnunet_bin /tmp/nn/bin``.
It prints one table per dataset and exits non-zero if any figure disagrees beyond its tolerance.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from transseg.dataset import load_dataset
from transseg.example import ExampleSettings, make_example_task
from transseg.planning.fingerprint import extract_fingerprint

PERCENTILE_TOLERANCE = 0.01   # of the 0.5-99.5 percentile range: both sides sample the foreground


def nnunet_fingerprint(task_folder: Path, work: Path, nnunet_bin: Path, dataset_id: int) -> dict:
    env = {**os.environ, "nnUNet_raw": str(work / "nnunet_raw"), "nnUNet_preprocessed": str(work / "nnunet_pre"),
           "nnUNet_results": str(work / "nnunet_results")}
    for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        Path(env[key]).mkdir(parents=True, exist_ok=True)
    subprocess.run([str(nnunet_bin / "nnUNetv2_convert_MSD_dataset"), "-i", str(task_folder), "-np", "2"],
                   check=True, env=env, capture_output=True)
    subprocess.run([str(nnunet_bin / "nnUNetv2_extract_fingerprint"), "-d", str(dataset_id), "-np", "2"],
                   check=True, env=env, capture_output=True)
    found = list(Path(env["nnUNet_preprocessed"]).glob(f"Dataset{dataset_id:03d}_*/dataset_fingerprint.json"))
    return json.loads(found[0].read_text())


def compare(ours: dict, theirs: dict) -> list[tuple[str, str, str, bool]]:
    rows = []
    our_spacings = [c["spacing"] for c in ours["cases"]]
    our_shapes = [c["shape_after_crop"] for c in ours["cases"]]
    rows.append(("spacings (all cases)", f"{len(our_spacings)} cases", "same",
                 np.allclose(our_spacings, theirs["spacings"], rtol=1e-6)))
    rows.append(("shapes after crop (all cases)", str(our_shapes[0]) + " ...", str(theirs["shapes_after_crop"][0]) + " ...",
                 [list(s) for s in theirs["shapes_after_crop"]] == our_shapes))
    for index, channel in enumerate(ours["channels"]):
        mine = channel["foreground_intensity"]
        other = theirs["foreground_intensity_properties_per_channel"][str(index)]
        spread = other["percentile_99_5"] - other["percentile_00_5"]
        for key in ("percentile_00_5", "median", "percentile_99_5", "mean"):
            agree = abs(mine[key] - other[key]) <= PERCENTILE_TOLERANCE * spread
            rows.append((f"channel {index} {key}", f"{mine[key]:.3f}", f"{other[key]:.3f}", agree))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nnunet_bin", type=Path, required=True, help="folder holding nnUNetv2_* scripts")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="transseg_fp_"))
    datasets = [
        ExampleSettings(task_id=91, name="CompareCT", num_training=8, num_test=0, in_plane=(128, 112), slices=(20, 40)),
        ExampleSettings(task_id=92, name="CompareMR", modality="MR", num_training=6, num_test=0, in_plane=(96, 96),
                        slices=(16, 24)),
    ]
    all_agree = True
    for settings in datasets:
        folder = make_example_task(work / "raw", settings)
        ours = extract_fingerprint(load_dataset(folder), folder.name, num_processes=2)
        theirs = nnunet_fingerprint(folder, work, args.nnunet_bin, settings.task_id)
        print(f"\n{folder.name}: TransSeg vs nnU-Net v2 fingerprint")
        print(f"{'figure':34s} {'TransSeg':>14s} {'nnU-Net v2':>14s}  agree")
        for name, mine, other, agree in compare(ours, theirs):
            print(f"{name:34s} {mine:>14s} {other:>14s}  {'yes' if agree else 'NO'}")
            all_agree &= agree
    return 0 if all_agree else 1


if __name__ == "__main__":
    sys.exit(main())
