"""Which window each training sample is: a pure function of (seed, step, slot).

A step's global batch has ``global_batch_size`` slots. Rank r of W, in its micro-batch m of A
(gradient accumulation), fills slots ``[(m W + r) b, (m W + r + 1) b)`` with b windows per GPU. A
slot's window (case, centre slice, forced class, augmentation) is drawn from a generator seeded
with (seed, step, slot) alone, so:

- a resumed run sees exactly the batches the uninterrupted run would have seen;
- one process and several distributed ranks train on the same global batch, split differently;
- no worker, loader or RNG state ever needs saving.

Foreground oversampling follows nnU-Net: ``round(G * fraction)`` slots of every global batch,
spread evenly over it, are forced onto a slice listed in ``class_locations`` for a class present in
that case, and the crop is placed so that a voxel of that class lies inside it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from ..planning.plans import AugmentationPlan


@dataclass(frozen=True)
class TrainingCase:
    """What the sampler must know of one preprocessed case (from its CASE.json)."""

    identifier: str
    num_slices: int
    class_slices: dict[int, list[int]]       # foreground class index -> slices that contain it


@dataclass(frozen=True)
class Augmentation:
    """One window's augmentation, drawn once and applied identically to all slices and the label."""

    zoom: float = 1.0
    flip_slices: bool = False
    flip_rows: bool = False
    flip_columns: bool = False
    rotation_degrees: float = 0.0
    intensity_shift: float = 0.0
    intensity_seed: Optional[int] = None       # preset 'nnunet': seeds nnU-Net's intensity transforms


@dataclass(frozen=True)
class WindowDraw:
    """Everything random about one training window; reading it is then deterministic."""

    case: int
    centre: int
    forced_class: Optional[int]               # a voxel of this class must lie in the crop
    position: tuple[float, float]             # uniforms in [0, 1): where the crop sits
    voxel_choice: float                       # uniform in [0, 1): which voxel of forced_class
    augmentation: Augmentation


def slot_generator(seed: int, step: int, slot: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), int(step), int(slot)])


def forced_slots(global_batch: int, fraction: float) -> frozenset[int]:
    """The slots of a global batch that are forced onto foreground, evenly spread."""
    count = min(global_batch, int(round(global_batch * fraction)))
    return frozenset(s for s in range(global_batch)
                     if math.floor((s + 1) * count / global_batch) > math.floor(s * count / global_batch))


def rank_slots(micro_batch: int, rank: int, world_size: int, per_gpu_batch: int) -> range:
    """The global-batch slots that ``rank`` fills in micro-batch ``micro_batch``."""
    start = (micro_batch * world_size + rank) * per_gpu_batch
    return range(start, start + per_gpu_batch)


def draw_augmentation(rng: np.random.Generator, plan: AugmentationPlan, square: bool) -> Augmentation:
    """The paper's augmentation; quarter turns of 90 or 270 degrees need a square input."""
    zoom = float(rng.uniform(*plan.zoom_range)) if rng.random() < plan.zoom_probability else 1.0
    flips = [bool(rng.random() < plan.flip_probability) for _ in range(3)]
    rotation = 0.0
    if rng.random() < plan.rotation_probability:
        if plan.rotation == "quarter_turns":
            rotation = float(90 * rng.integers(1, 4)) if square else 180.0
        else:
            rotation = float(rng.uniform(-plan.rotation_degrees, plan.rotation_degrees))
    shift = (float(rng.uniform(-plan.intensity_shift, plan.intensity_shift))
             if rng.random() < plan.intensity_shift_probability else 0.0)
    seed = int(rng.integers(2 ** 32)) if plan.preset == "nnunet" else None   # drawn last: 'paper' draws are unchanged
    return Augmentation(zoom, *flips, rotation, shift, seed)


def draw_window(seed: int, step: int, slot: int, cases: Sequence[TrainingCase], forced: bool,
                augmentation: Optional[AugmentationPlan], square: bool = True) -> WindowDraw:
    """The window of one slot: a case uniformly, then a foreground or uniform centre slice."""
    rng = slot_generator(seed, step, slot)
    case_index = int(rng.integers(len(cases)))
    case = cases[case_index]
    present = sorted(c for c, slices in case.class_slices.items() if slices)
    forced_class = None
    if forced and present:
        forced_class = present[int(rng.integers(len(present)))]
        slices = case.class_slices[forced_class]
        centre = int(slices[int(rng.integers(len(slices)))])
    else:
        centre = int(rng.integers(case.num_slices))
    position = (float(rng.random()), float(rng.random()))
    voxel_choice = float(rng.random())
    augment = draw_augmentation(rng, augmentation, square) if augmentation is not None else Augmentation()
    return WindowDraw(case_index, centre, forced_class, position, voxel_choice, augment)
