"""The training data loader: item i is one rank's micro-batch i of the run, cut from memory maps.

Items are pure functions of their index (see ``sampling``), so a torch ``DataLoader`` with any
number of worker processes delivers the same batches in the same order, and a resumed run starts
at the item of its step. Case arrays are memory-mapped lazily in each worker (a memory map is
never pickled into a worker), so a dataset larger than RAM trains. Each worker keeps at most
``MAX_OPEN_CASES`` cases mapped (least recently used first out): every map holds an open file,
and a thousand cases would otherwise pass the usual limit of 1,024 open files per process.
"""
from __future__ import annotations

import signal
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..devices import usable_cpus
from ..inference.window_spec import WindowSpec
from ..planning.plans import AugmentationPlan
from ..preprocessing import load_case, load_properties
from .sampling import TrainingCase, draw_window, forced_slots, rank_slots
from .windows import cut_window

MAX_OPEN_CASES = 64      # cases memory-mapped at once per worker (two open files each)


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

    def __init__(self, folder: Path, cases: Sequence[TrainingCase], spec: WindowSpec, layout: BatchLayout, *,
                 augmentation: Optional[AugmentationPlan], seed: int, oversampling: float, first_step: int,
                 steps: int, max_open_cases: int = MAX_OPEN_CASES):
        self.folder = Path(folder)
        self.cases = list(cases)
        self.spec = spec
        self.layout = layout
        self.augmentation = augmentation
        self.seed = seed
        self.forced = forced_slots(layout.global_batch, oversampling)
        self.first_step = first_step
        self.steps = steps
        self.max_open_cases = max(1, int(max_open_cases))
        self._arrays: OrderedDict[int, tuple[np.ndarray, np.ndarray]] = OrderedDict()

    def __len__(self) -> int:
        return max(0, self.steps - self.first_step) * self.layout.accumulation

    def arrays(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The memory maps of case ``index``; the least recently used case is closed past the bound."""
        if index in self._arrays:
            self._arrays.move_to_end(index)
            return self._arrays[index]
        while len(self._arrays) >= self.max_open_cases:
            self._arrays.popitem(last=False)        # its maps (and files) close with the last reference
        data, seg, _ = load_case(self.folder, self.cases[index].identifier, mmap=True)
        self._arrays[index] = (data, seg)
        return data, seg

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_arrays": OrderedDict()}     # workers open their own memory maps

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
    """One thread per worker; SIGTERM/SIGINT are left to the main process.

    A pre-emption signal goes to the whole process group (torchrun, SLURM's ``--signal``, Ctrl-C):
    workers that died of it would take the run down before the main process saves its state.
    Ignoring it here lets the main process finish its step, save ``checkpoint_latest.pt``, and stop
    the workers itself.
    """
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(1)


def default_workers(local_world_size: int = 1) -> int:
    """The CPUs of this node shared out over its ranks, at most 8 each (0 = load in the main process).

    ``local_world_size`` is the number of ranks on this node (LOCAL_WORLD_SIZE), not the global
    world size: 2 nodes of 8 GPUs give each rank an eighth of its node's CPUs, not a sixteenth. The CPUs
    are those the process may use (affinity, container quota): ``docker --cpus 4`` on a 64-core host
    means 4.
    """
    return max(0, min(8, usable_cpus() // max(1, local_world_size) - 1))


def make_loader(batches: WindowBatches, workers: int, pin_memory: bool = False) -> DataLoader:
    """Items in order (the step order), each already a micro-batch."""
    return DataLoader(batches, batch_size=None, shuffle=False, num_workers=workers, pin_memory=pin_memory,
                      worker_init_fn=_worker_init if workers else None, prefetch_factor=4 if workers else None,
                      persistent_workers=False)
