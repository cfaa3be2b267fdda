"""Write tests/fixtures/nnunet_fingerprint.json: nnU-Net v2's own fingerprint of two generated tasks.

The test ``tests/test_fingerprint_nnunet.py`` regenerates the same tasks with
``transseg.example.make_example_task`` (the settings are stored in the fixture) and compares our
fingerprint with these figures, so the reference is nnU-Net itself, computed once, not numpy at test
time. Nothing of nnU-Net runs in the tests; it is not a dependency. To regenerate (only when the
generator or the settings change):

    python3 -m venv /tmp/nnunet_venv --system-site-packages && /tmp/nnunet_venv/bin/pip install nnunetv2
    python benchmarks/make_nnunet_fingerprint_fixture.py --nnunet_bin /tmp/nnunet_venv/bin
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from transseg.example import ExampleSettings, make_example_task

FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "nnunet_fingerprint.json"
TASKS = [
    ExampleSettings(task_id=93, name="FixtureCT", num_training=5, num_test=0, in_plane=(64, 56), slices=(10, 16),
                    seed=7),
    ExampleSettings(task_id=94, name="FixtureMR", modality="MR", num_training=4, num_test=0, in_plane=(48, 48),
                    slices=(8, 12), seed=8),
]
KEPT = ("spacings", "shapes_after_crop", "foreground_intensity_properties_per_channel",
        "median_relative_size_after_cropping")


def run_nnunet(task_folder: Path, work: Path, nnunet_bin: Path, dataset_id: int) -> tuple[dict, list[str]]:
    """nnU-Net's dataset_fingerprint.json and its case order (identifiers as nnU-Net lists them)."""
    env = {**os.environ, "nnUNet_raw": str(work / "nnunet_raw"), "nnUNet_preprocessed": str(work / "nnunet_pre"),
           "nnUNet_results": str(work / "nnunet_results")}
    for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        Path(env[key]).mkdir(parents=True, exist_ok=True)
    for command in (["nnUNetv2_convert_MSD_dataset", "-i", str(task_folder), "-np", "1"],
                    ["nnUNetv2_extract_fingerprint", "-d", str(dataset_id), "-np", "1"]):
        subprocess.run([str(nnunet_bin / command[0]), *command[1:]], check=True, env=env, capture_output=True)
    fingerprint = next(Path(env["nnUNet_preprocessed"]).glob(f"Dataset{dataset_id:03d}_*/dataset_fingerprint.json"))
    labels = next(Path(env["nnUNet_raw"]).glob(f"Dataset{dataset_id:03d}_*/labelsTr"))
    identifiers = sorted(p.name[:-len(".nii.gz")] for p in labels.glob("*.nii.gz"))   # nnU-Net's order
    return json.loads(fingerprint.read_text()), identifiers


def nnunet_version(nnunet_bin: Path) -> str:
    code = "import importlib.metadata as m; print(m.version('nnunetv2'))"
    return subprocess.run([str(nnunet_bin / "python"), "-c", code], check=True, capture_output=True,
                          text=True).stdout.strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nnunet_bin", type=Path, required=True, help="folder holding nnUNetv2_* and python")
    parser.add_argument("--output", type=Path, default=FIXTURE)
    args = parser.parse_args()
    tasks = []
    with tempfile.TemporaryDirectory(prefix="transseg_nnunet_fixture_") as work:
        for settings in TASKS:
            folder = make_example_task(Path(work) / "raw", settings)
            fingerprint, identifiers = run_nnunet(folder, Path(work), args.nnunet_bin, settings.task_id)
            tasks.append({"settings": dataclasses.asdict(settings), "case_identifiers": identifiers,
                          **{key: fingerprint[key] for key in KEPT}})
    fixture = {"generated_by": "benchmarks/make_nnunet_fingerprint_fixture.py",
               "nnunetv2_version": nnunet_version(args.nnunet_bin),
               "note": "nnU-Net v2's dataset_fingerprint.json figures; arrays in (Z, Y, X) order", "tasks": tasks}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(fixture, indent=1) + "\n")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
