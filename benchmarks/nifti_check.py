"""What the read-path checks cost: the NIfTI truncation check, the thorough (integrity) check, the NaN scan.

Writes a CT-like int16 and an MR-like float32 ``.nii.gz`` (512 x 512 x 150 by default) and times,
per file, the best of ``--repeat`` runs of: SimpleITK's read alone, ``check_nifti`` (every read),
``check_nifti(thorough=True)`` (``--verify_dataset_integrity``) and the NaN/Inf scan of the array.
Run: ``python benchmarks/nifti_check.py [--slices 150] [--repeat 5]``.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from transseg.io import refuse_non_finite
from transseg.nifti import check_nifti


def best_of(repeat: int, function) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def make_images(folder: Path, slices: int) -> list[Path]:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:512, :512]
    body = ((yy - 256) / 200) ** 2 + ((xx - 256) / 230) ** 2 <= 1
    noise = rng.normal(0, 12, (slices, 512, 512))
    ct = (np.where(body, 40, -1000)[None] + noise).astype(np.int16)
    mr = ((np.where(body, 300.0, 0.0)[None] + noise * body)).astype(np.float32)
    paths = [folder / "ct_int16.nii.gz", folder / "mr_float32.nii.gz"]
    for array, path in zip((ct, mr), paths):
        sitk.WriteImage(sitk.GetImageFromArray(array), str(path), useCompression=True)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=150)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        print(f"{'file':18s} {'MB gz':>7s} {'MB raw':>7s} {'ITK read':>9s} {'quick check':>12s} "
              f"{'thorough':>9s} {'NaN scan':>9s}")
        for path in make_images(Path(folder), args.slices):
            array = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
            read = best_of(args.repeat, lambda: sitk.GetArrayFromImage(sitk.ReadImage(str(path))))
            quick = best_of(args.repeat, lambda: check_nifti(path))
            thorough = best_of(args.repeat, lambda: check_nifti(path, thorough=True))
            scan = best_of(args.repeat, lambda: refuse_non_finite(array, path))
            print(f"{path.name:18s} {path.stat().st_size / 1e6:7.1f} {array.nbytes / 1e6:7.1f} {read:8.3f}s "
                  f"{quick * 1e6:9.0f} us {thorough:8.3f}s {scan * 1e3:7.1f}ms")


if __name__ == "__main__":
    main()
