"""Largest connected component of a CT-sized mask: acvl-utils' helpers, and why postprocessing.py filters its own way.

A 200 x 512 x 512 mask: one large block, with and without 0.1 % scattered single-voxel specks
(about 52,000 components, what a noisy prediction can hold). Times, one thread:

- acvl-utils ``remove_all_but_largest_component`` (scikit-image labelling; its filter calls
  ``max(sizes)`` once per component, quadratic in the number of components);
- acvl-utils ``generic_filter_components`` (scikit-image) and ``generic_filter_components_cc3d``
  (connected-components-3d) with a linear largest-component filter; the last is what
  ``transseg.postprocessing.largest_component`` uses (best of three runs each).

    python benchmarks/postprocessing.py [--slices 200]
"""
from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slices", type=int, default=200)
    parser.add_argument("--skip_quadratic", action="store_true", help="skip the slow ready-made helper")
    args = parser.parse_args()
    from acvl_utils.morphology.morphology_helper import (generic_filter_components, generic_filter_components_cc3d,
                                                         remove_all_but_largest_component)

    from transseg.postprocessing import _keep_largest, largest_component

    clean = np.zeros((args.slices, 512, 512), bool)
    clean[args.slices // 10: 3 * args.slices // 4, 100:300, 100:300] = True
    clean[args.slices // 10: args.slices // 5, 400:420, 400:420] = True     # a stray blob: 2 components
    noisy = clean | (np.random.default_rng(0).random(clean.shape) < 0.001)
    candidates = {
        "acvl remove_all_but_largest_component (skimage)": lambda m: remove_all_but_largest_component(m),
        "acvl generic_filter_components (skimage), linear filter": lambda m: generic_filter_components(
            m, _keep_largest),
        "acvl generic_filter_components_cc3d, linear filter": lambda m: generic_filter_components_cc3d(
            m, _keep_largest, connectivity=26),
        "transseg.postprocessing.largest_component": largest_component,
    }
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; mask {clean.shape}")
    for label, mask in (("clean (2 components)", clean), ("noisy (0.1 % specks)", noisy)):
        expected = None
        for name, function in candidates.items():
            if args.skip_quadratic and "remove_all_but" in name and mask is noisy:
                continue
            seconds = []
            for _ in range(1 if "remove_all_but" in name else 3):     # best of three (a shared machine)
                start = time.perf_counter()
                result = function(mask)
                seconds.append(time.perf_counter() - start)
            seconds = min(seconds)
            expected = result if expected is None else expected
            print(f"{label:22s} {name:58s} {seconds:7.2f} s  same result: {np.array_equal(result, expected)}")


if __name__ == "__main__":
    main()
