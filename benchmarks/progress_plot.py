"""Cost of progress.png late in a long run: memory held for the plot, and the time of one draw.

Appends N step records (and a validation every 500 steps) to a ``MetricsLog`` and draws
progress.png once, with the bounded downsampled series training uses (``PLOT_POINTS`` points)
and, for comparison, with every step kept (what drawing from all records costs):

    python benchmarks/progress_plot.py [--records 250000]
"""
from __future__ import annotations

import argparse
import tempfile
import time
import tracemalloc
from pathlib import Path

from transseg.training.progress import PLOT_POINTS, MetricsLog, plot_progress


def measure(records: int, capacity: int) -> tuple[float, float, float]:
    """(MiB held by the log in memory, seconds to append the records, seconds for one draw)."""
    with tempfile.TemporaryDirectory() as temporary:
        tracemalloc.start()
        start = time.perf_counter()
        log = MetricsLog(Path(temporary), capacity=capacity)
        for step in range(1, records + 1):
            record = {"step": step, "loss": 1.0 / step ** 0.5, "dice_loss": 0.5, "focal_loss": 0.1,
                      "lr": 3e-5, "windows_per_s": 40.0, "step_seconds": 0.4, "data_seconds": 0.01}
            if step % 500 == 0:
                record.update(val_mean_dice=0.8, val_ema_dice=0.79,
                              val_dice_per_class={f"class{c}": 0.8 for c in range(1, 14)})
            log.append(record)
        appended = time.perf_counter() - start
        held = tracemalloc.get_traced_memory()[0] / 2 ** 20
        tracemalloc.stop()
        plot_progress(log, Path(temporary) / "warm-up.png")        # matplotlib's import and font cache
        start = time.perf_counter()
        plot_progress(log, Path(temporary) / "progress.png")
        drawn = time.perf_counter() - start
        log.close()
    return held, appended, drawn


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=250_000)
    args = parser.parse_args()
    for label, capacity in ((f"downsampled ({PLOT_POINTS} points)", PLOT_POINTS), ("every step kept", 10 ** 9)):
        held, appended, drawn = measure(args.records, capacity)
        print(f"{args.records} records, {label:28s}: {held:7.1f} MiB held, one draw {drawn:5.2f} s "
              f"(appending took {appended:.1f} s, {appended / args.records * 1e6:.0f} us per record)")


if __name__ == "__main__":
    main()
