"""What a run leaves to read: metrics.jsonl (one JSON record per step or validation), progress.png,
and training_log.txt (the human log, attached to the ``transseg`` logger of rank 0).
"""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Iterable, Iterator, Optional, Sequence

from ..files import atomic_path

METRICS_FILE = "metrics.jsonl"
PLOT_FILE = "progress.png"
LOG_FILE = "training_log.txt"


PLOT_POINTS = 2000          # points per curve of progress.png, whatever the number of steps
STEP_KEYS = ("loss", "dice_loss", "focal_loss", "lr", "windows_per_s")


class Downsampled:
    """A long per-step series held in at most ``capacity`` points: each point the mean of ``stride``
    consecutive steps; when the points fill up, neighbours are merged and the stride doubles.

    Memory and drawing time stay constant over a run of any length (250k steps: 2000 points), and
    the means are the smoothing the plot wants anyway.
    """

    def __init__(self, keys: Sequence[str] = STEP_KEYS, capacity: int = PLOT_POINTS):
        self.keys, self.capacity, self.stride = tuple(keys), max(2, capacity - capacity % 2), 1
        self.points: list[list[float]] = []          # [mean step, mean of each key]
        self._sums, self._count = [0.0] * (len(self.keys) + 1), 0

    def add(self, record: dict) -> None:
        values = [float(record["step"])] + [float(record.get(k, math.nan)) for k in self.keys]
        self._sums = [a + b for a, b in zip(self._sums, values)]
        self._count += 1
        if self._count < self.stride:
            return
        self.points.append([v / self._count for v in self._sums])
        self._sums, self._count = [0.0] * len(self._sums), 0
        if len(self.points) >= self.capacity:
            self.points = [[(a + b) / 2 for a, b in zip(self.points[i], self.points[i + 1])]
                           for i in range(0, len(self.points) - 1, 2)]
            self.stride *= 2

    def column(self, key: str) -> list[float]:
        index = 0 if key == "step" else 1 + self.keys.index(key)
        return [point[index] for point in self.points]


class MetricsLog:
    """Append-only JSON lines; on resume, records after the checkpoint's step are dropped first.

    In memory only what the plot needs: the per-step figures downsampled (:class:`Downsampled`)
    and the validation records (one per ``val_every`` steps).
    """

    def __init__(self, folder: Path, resume_step: Optional[int] = None, capacity: int = PLOT_POINTS):
        self.path = Path(folder) / METRICS_FILE
        self.series = Downsampled(capacity=capacity)
        self.validations: list[dict] = []
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.is_file():
            with atomic_path(self.path) as temporary, open(temporary, "w", encoding="utf-8") as kept:
                for record in _read_records(self.path):
                    if resume_step is not None and record["step"] <= resume_step:
                        kept.write(json.dumps(record) + "\n")
                        self._remember(record)
        self._handle = open(self.path, "a", encoding="utf-8")

    def _remember(self, record: dict) -> None:
        if "loss" in record:
            self.series.add(record)
        if "val_mean_dice" in record:
            self.validations.append({k: record[k] for k in ("step", "val_mean_dice", "val_ema_dice",
                                                            "val_dice_per_class") if k in record})

    def append(self, record: dict) -> None:
        self._remember(record)
        self._handle.write(json.dumps(record, allow_nan=False) + "\n")
        self._handle.flush()

    def close(self) -> None:
        self._handle.close()


def _read_records(path: Path) -> Iterator[dict]:
    """The records of a metrics file, line by line (never the whole file in memory)."""
    with open(path, encoding="utf-8") as lines:
        yield from _parse(lines)


def _parse(lines: Iterable[str]) -> Iterator[dict]:
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:      # a line cut by a killed run
            continue
        if isinstance(record, dict) and "step" in record:
            yield record


def attach_log_file(folder: Path) -> logging.Handler:
    handler = logging.FileHandler(Path(folder) / LOG_FILE, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
    logging.getLogger("transseg").addHandler(handler)
    return handler


def _smooth(values: list[float], window: int) -> list[float]:
    out, total = [], 0.0
    for index, value in enumerate(values):
        total += value
        if index >= window:
            total -= values[index - window]
        out.append(total / min(index + 1, window))
    return out


def plot_progress(metrics: MetricsLog, path: Path) -> None:
    """Loss parts, validation Dice and its EMA, learning rate and speed, one panel each.

    Drawn from the downsampled series, so a draw costs the same at step 250,000 as at step 2,000.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series, validations = metrics.series, metrics.validations
    figure, axes = plt.subplots(4, 1, figsize=(9, 12), sharex=True)
    window = max(1, len(series.points) // 50)
    x = series.column("step")
    for key, label in (("loss", "total"), ("dice_loss", "Dice part"), ("focal_loss", "focal part")):
        axes[0].plot(x, _smooth(series.column(key), window), label=label)
    axes[0].set_ylabel(f"training loss\n(mean of {window * series.stride} steps)")
    axes[0].legend(loc="upper right")
    if validations:
        vx = [r["step"] for r in validations]
        per_class = validations[-1].get("val_dice_per_class", {})
        for name in per_class:
            axes[1].plot(vx, [r.get("val_dice_per_class", {}).get(name, math.nan) for r in validations],
                         alpha=0.5, label=name)
        axes[1].plot(vx, [r["val_mean_dice"] for r in validations], "k-", label="mean")
        axes[1].plot(vx, [r["val_ema_dice"] for r in validations], "k--", label="EMA (picks best)")
        axes[1].legend(loc="lower right", fontsize="small")
    axes[1].set_ylabel("validation Dice")
    axes[1].set_ylim(0, 1)
    axes[2].plot(x, series.column("lr"))
    axes[2].set_ylabel("learning rate")
    axes[3].plot(x, _smooth(series.column("windows_per_s"), window))
    axes[3].set_ylabel("windows / s")
    axes[3].set_xlabel("step")
    for axis in axes:
        axis.grid(alpha=0.3)
    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=80)
    plt.close(figure)
