"""The training data loader: item i is one rank's micro-batch i of the run, cut from memory maps.

Items are pure functions of their index (see ``sampling``), so a torch ``DataLoader`` with any
number of worker processes delivers the same batches in the same order, and a resumed run starts
at the item of its step. Case arrays are memory-mapped lazily in each worker (a memory map is
never pickled into a worker), so a dataset larger than RAM trains.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..inference.window_spec import WindowSpec
from ..planning.plans import AugmentationPlan
from ..preprocessing import load_case, load_properties
from .sampling import TrainingCase, draw_window, forced_slots, rank_slots
from .windows import cut_window


def training_cases(folder: Path, identifiers: Sequence[str]) -> list[TrainingCase]:
    """The sampler's view of each case, from its CASE.json (nothing is read from the arrays)."""
    cases = []
    for identifier in identifiers:
        properties = load_properties(folder, identifier)
        locations = properties.get("class_locations") or {}
        cases.append(TrainingCase(identifier, int(properties["shape_after_resampling"][0]),
                                  {int(c): list(s) for c, s in locations.items()}))
    return cases


@dataclass(frozen=True)
class BatchLayout:
    """How a step's global batch is split over ranks and accumulated micro-batches."""

    global_batch: int
    per_gpu_batch: int
    world_size: int = 1
    rank: int = 0

    @property
    def accumulation(self) -> int:
        return self.global_batch // (self.per_gpu_batch * self.world_size)

    def slots(self, micro_batch: int) -> range:
        return rank_slots(micro_batch, self.rank, self.world_size, self.per_gpu_batch)


class WindowBatches(Dataset):
    """Micro-batches ``first_step * A`` .. ``steps * A`` of one rank, as {'image', 'target', 'step'}."""

    def __init__(self, folder: Path, cases: Sequence[TrainingCase], spec: WindowSpec, layout: BatchLayout,
                 augmentation: Optional[AugmentationPlan], seed: int, oversampling: float, first_step: int,
                 steps: int):
        self.folder = Path(folder)
        self.cases = list(cases)
        self.spec = spec
        self.layout = layout
        self.augmentation = augmentation
        self.seed = seed
        self.forced = forced_slots(layout.global_batch, oversampling)
        self.first_step = first_step
        self.steps = steps
        self._arrays: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return max(0, self.steps - self.first_step) * self.layout.accumulation

    def arrays(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if index not in self._arrays:
            data, seg, _ = load_case(self.folder, self.cases[index].identifier, mmap=True)
            self._arrays[index] = (data, seg)
        return self._arrays[index]

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_arrays": {}}     # workers open their own memory maps

    def __getitem__(self, item: int) -> dict:
        step = self.first_step + item // self.layout.accumulation
        micro_batch = item % self.layout.accumulation
        square = self.spec.resolution[0] == self.spec.resolution[1]
        images, targets = [], []
        for slot in self.layout.slots(micro_batch):
            draw = draw_window(self.seed, step, slot, self.cases, slot in self.forced, self.augmentation, square)
            data, seg = self.arrays(draw.case)
            image, target = cut_window(data, seg, draw, self.spec)
            images.append(image)
            targets.append(target)
        return {"image": torch.stack(images), "target": torch.stack(targets), "step": step,
                "micro_batch": micro_batch}


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)


def default_workers(world_size: int = 1) -> int:
    """The CPUs shared out over the ranks of this machine, at most 8 each (0 = load in the main process)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(0, min(8, cpus // max(1, world_size) - 1))


def make_loader(batches: WindowBatches, workers: int, pin_memory: bool = False) -> DataLoader:
    """Items in order (the step order), each already a micro-batch."""
    return DataLoader(batches, batch_size=None, shuffle=False, num_workers=workers, pin_memory=pin_memory,
                      worker_init_fn=_worker_init if workers else None, prefetch_factor=4 if workers else None,
                      persistent_workers=False)
