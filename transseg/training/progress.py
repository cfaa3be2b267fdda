"""What a run leaves to read: metrics.jsonl (one JSON record per step or validation), progress.png,
and training_log.txt (the human log, attached to the ``transseg`` logger of rank 0).
"""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Iterable, Optional

from ..files import atomic_path

METRICS_FILE = "metrics.jsonl"
PLOT_FILE = "progress.png"
LOG_FILE = "training_log.txt"


class MetricsLog:
    """Append-only JSON lines; on resume, records after the checkpoint's step are dropped first."""

    def __init__(self, folder: Path, resume_step: Optional[int] = None):
        self.path = Path(folder) / METRICS_FILE
        self.records: list[dict] = []
        if self.path.is_file():
            self.records = [r for r in _read_records(self.path) if resume_step is not None and r["step"] <= resume_step]
            with atomic_path(self.path) as temporary:
                temporary.write_text("".join(json.dumps(r) + "\n" for r in self.records))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = open(self.path, "a", encoding="utf-8")

    def append(self, record: dict) -> None:
        self.records.append(record)
        self._handle.write(json.dumps(record, allow_nan=False) + "\n")
        self._handle.flush()

    def close(self) -> None:
        self._handle.close()


def _read_records(path: Path) -> Iterable[dict]:
    for line in path.read_text(encoding="utf-8").splitlines():
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


def plot_progress(records: list[dict], path: Path) -> None:
    """Loss parts, validation Dice and its EMA, learning rate and speed, one panel each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r for r in records if "loss" in r]
    validations = [r for r in records if "val_mean_dice" in r]
    figure, axes = plt.subplots(4, 1, figsize=(9, 12), sharex=True)
    window = max(1, len(steps) // 50)
    x = [r["step"] for r in steps]
    for key, label in (("loss", "total"), ("dice_loss", "Dice part"), ("focal_loss", "focal part")):
        axes[0].plot(x, _smooth([r[key] for r in steps], window), label=label)
    axes[0].set_ylabel(f"training loss\n(mean of {window} steps)")
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
    axes[2].plot(x, [r["lr"] for r in steps])
    axes[2].set_ylabel("learning rate")
    axes[3].plot(x, _smooth([r["windows_per_s"] for r in steps], window))
    axes[3].set_ylabel("windows / s")
    axes[3].set_xlabel("step")
    for axis in axes:
        axis.grid(alpha=0.3)
    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=80)
    plt.close(figure)
