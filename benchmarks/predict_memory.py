"""Peak memory of prediction's own work on a large case, apart from the network's working memory.

A whole-body-CT-sized preprocessed case (default 1000 x 512 x 512 float16, 14 classes, restored to
a 480 x 480 in-plane grid) goes through the real inference and export code with a stand-in network
(a 1 x 1 convolution: negligible memory and time), once streamed (the default) and once keeping
float16 probabilities (``--save_probabilities``). ``--source_slices`` gives the cropped scan another
slice count than the preprocessed case, i.e. a plan that resamples the slice axis (streamed too since
issue 14). Each mode runs in its own process; printed: the case's size and the peak RSS above the
process's RSS before the case was loaded.

    python benchmarks/predict_memory.py [--slices 1000] [--classes 14]
    python benchmarks/predict_memory.py --slices 400 --classes 30 --source_slices 160   # slice axis resampled
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GIB = 1024 ** 3


def _rss() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * 4096


def child(mode: str, slices: int, classes: int, output: str, source_slices: int) -> None:
    import numpy as np
    import torch

    from transseg.inference.case import export_case, predict_case
    from transseg.inference.volume import InferenceSettings, VolumeModel
    from transseg.inference.window_spec import WindowSpec

    torch.set_num_threads(2)
    network = torch.nn.Sequential(torch.nn.Flatten(1, 2), torch.nn.Conv2d(5, classes, 1)).eval()
    model = VolumeModel(network, WindowSpec(5, 1, (512, 512)))
    baseline = _rss()
    data = np.empty((1, slices, 512, 512), np.float16)
    rng = np.random.default_rng(0)
    for z in range(0, slices, 16):                # no float32 copy of the whole case at any time
        data[0, z:z + 16] = rng.standard_normal((min(16, slices - z), 512, 512), dtype=np.float32)
    properties = {"shape_before_crop": [source_slices, 480, 480], "bbox": [[0, source_slices], [0, 480], [0, 480]],
                  "slice_first_order": [0, 1, 2], "shape_before_resampling": [source_slices, 480, 480],
                  "shape_after_resampling": [slices, 512, 512], "label_values": list(range(classes)),
                  "orientation_change": {"axes": [0, 1, 2], "flips": [False, False, False]},
                  "geometry": {"spacing": [0.8, 0.8, 1.5], "origin": [0.0, 0.0, 0.0],
                               "direction": [1, 0, 0, 0, 1, 0, 0, 0, 1], "size": [480, 480, source_slices],
                               "pixel_type": "int16"}}
    start = time.perf_counter()
    prediction = predict_case([model], data, properties, torch.device("cpu"), InferenceSettings(batch_size=8),
                              keep_probabilities=mode == "probabilities")
    export_case(prediction, Path(output) / f"{mode}.nii.gz")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"mode": mode, "case_bytes": data.nbytes, "baseline": baseline, "peak": peak,
                      "seconds": time.perf_counter() - start}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slices", type=int, default=1000)
    parser.add_argument("--classes", type=int, default=14)
    parser.add_argument("--source_slices", type=int, default=None,
                        help="slices of the scan before resampling (default: --slices, no slice-axis resampling)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--output", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.slices, args.classes, args.output, args.source_slices or args.slices)
        return
    source = args.source_slices or args.slices
    with tempfile.TemporaryDirectory() as output:
        for mode in ("stream", "probabilities"):
            result = subprocess.run([sys.executable, __file__, "--child", mode, "--slices", str(args.slices),
                                     "--classes", str(args.classes), "--output", output, "--source_slices", str(source)],
                                    capture_output=True, text=True)
            if result.returncode:
                raise SystemExit(result.stderr[-3000:])
            record = json.loads(result.stdout.strip().splitlines()[-1])
            above = record["peak"] - record["baseline"]
            print(f"{mode:13s}: case {args.slices} x 512 x 512 float16 = {record['case_bytes'] / GIB:.2f} GiB "
                  f"(scan {source} x 480 x 480), {args.classes} classes; peak RSS above the start {above / GIB:.2f} GiB "
                  f"({above / record['case_bytes']:.1f}x the case), {record['seconds']:.0f} s")


if __name__ == "__main__":
    main()
