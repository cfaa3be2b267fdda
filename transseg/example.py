"""A small synthetic task in the Medical Segmentation Decathlon layout, for tests, demos and benchmarks.

Each case is a body-like ellipse with an organ (label 1) and a lesion inside it (label 2), on an
anisotropic grid with a non-zero origin. ``modality='CT'`` writes 3D Hounsfield-like images;
``modality='MR'`` writes 4D two-channel MR-like images (T2, ADC) with a zero background, as MSD's
Prostate and BrainTumour tasks do. Test cases go to imagesTs, their labels to labelsTs.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import SimpleITK as sitk

from .files import atomic_path

LABELS = {"0": "background", "1": "organ", "2": "lesion"}


@dataclass(frozen=True)
class ExampleSettings:
    task_id: int = 99
    name: str = "Example"
    modality: str = "CT"                              # 'CT' (3D) or 'MR' (4D, two channels)
    num_training: int = 6
    num_test: int = 2
    in_plane: tuple[int, int] = (48, 40)             # Y, X voxels
    slices: tuple[int, int] = (12, 18)               # inclusive range of Z
    spacing: tuple[float, float, float] = (0.8, 0.8, 2.5)   # x, y, z (mm)
    spacing_jitter: float = 0.1                      # relative in-plane spacing variation between cases
    seed: int = 0

    @property
    def folder_name(self) -> str:
        return f"Task{self.task_id:02d}_{self.name}"


def _ellipsoid(shape: tuple[int, int, int], centre: np.ndarray, radii: np.ndarray) -> np.ndarray:
    grids = np.ogrid[tuple(slice(0, s) for s in shape)]
    distance = sum(((g - c) / r) ** 2 for g, c, r in zip(grids, centre, radii))
    return distance <= 1.0


def synthesise_case(shape: tuple[int, int, int], rng: np.random.Generator, modality: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (C, Z, Y, X) and labels (Z, Y, X) of one synthetic case."""
    z, y, x = shape
    body = _ellipse_body(shape, rng)
    organ_centre = np.array([z / 2, y / 2, x / 2]) + rng.uniform(-0.1, 0.1, 3) * np.array(shape)
    organ_radii = np.array([z * 0.3, y * 0.22, x * 0.22]) * rng.uniform(0.8, 1.2, 3)
    organ = _ellipsoid(shape, organ_centre, organ_radii) & body
    lesion_radii = organ_radii * rng.uniform(0.3, 0.45)
    lesion = _ellipsoid(shape, organ_centre + rng.uniform(-0.3, 0.3, 3) * organ_radii, lesion_radii) & organ
    label = np.zeros(shape, np.uint8)
    label[organ] = 1
    label[lesion] = 2
    noise = rng.standard_normal(shape).astype(np.float32)
    if modality == "CT":
        image = np.full(shape, -1000.0, np.float32)
        image[body] = 40.0
        image[organ] = 90.0
        image[lesion] = 15.0
        image += 12.0 * noise
        return np.round(image).astype(np.int16)[None], label
    t2 = np.where(body, 300.0, 0.0) + np.where(organ, 200.0, 0.0) + np.where(lesion, 350.0, 0.0)
    adc = np.where(body, 900.0, 0.0) - np.where(lesion, 500.0, 0.0)
    channels = np.stack([t2 + 20 * noise * body, adc + 40 * noise * body]).clip(0)
    return channels.astype(np.float32), label


def _ellipse_body(shape: tuple[int, int, int], rng: np.random.Generator) -> np.ndarray:
    z, y, x = shape
    yy, xx = np.ogrid[:y, :x]
    radii = np.array([y * 0.42, x * 0.45]) * rng.uniform(0.9, 1.0, 2)
    section = ((yy - y / 2) / radii[0]) ** 2 + ((xx - x / 2) / radii[1]) ** 2 <= 1.0
    return np.broadcast_to(section, shape)


def _image(array: np.ndarray, spacing, origin) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(tuple(float(s) for s in spacing))
    image.SetOrigin(tuple(float(o) for o in origin))
    return image


def _write(image: sitk.Image, path: Path) -> None:
    with atomic_path(path) as temporary:
        sitk.WriteImage(image, str(temporary), useCompression=True)


def write_case(images: np.ndarray, label: Optional[np.ndarray], spacing, origin, image_path: Path,
               label_path: Optional[Path]) -> None:
    if images.shape[0] == 1:
        _write(_image(images[0], spacing, origin), image_path)
    else:  # MSD stores channels as a fourth axis
        _write(sitk.JoinSeries([_image(c, spacing, origin) for c in images]), image_path)
    if label_path is not None:
        _write(_image(label, spacing, origin), label_path)


def make_example_task(raw_root: Path, settings: ExampleSettings = ExampleSettings()) -> Path:
    """Write the task under ``raw_root`` and return its folder."""
    folder = Path(raw_root) / settings.folder_name
    rng = np.random.default_rng(settings.seed)
    prefix = settings.name.lower()
    training, test = [], []
    for index in range(settings.num_training + settings.num_test):
        shape = (int(rng.integers(settings.slices[0], settings.slices[1] + 1)), *settings.in_plane)
        jitter = 1.0 + rng.uniform(-settings.spacing_jitter, settings.spacing_jitter)
        spacing = (settings.spacing[0] * jitter, settings.spacing[1] * jitter, settings.spacing[2])
        origin = rng.uniform(-200.0, 200.0, 3).round(2)
        images, label = synthesise_case(shape, rng, settings.modality)
        name = f"{prefix}_{index:03d}.nii.gz"
        is_test = index >= settings.num_training
        image_path = folder / ("imagesTs" if is_test else "imagesTr") / name
        label_path = folder / ("labelsTs" if is_test else "labelsTr") / name
        write_case(images, label, spacing, origin, image_path, label_path)
        if is_test:
            test.append(f"./imagesTs/{name}")
        else:
            training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
    (folder / "imagesTs").mkdir(parents=True, exist_ok=True)   # MSD tasks always have one
    modality = {"0": "CT"} if settings.modality == "CT" else {"0": "T2", "1": "ADC"}
    meta = {
        "name": settings.name,
        "description": "Synthetic TransSeg example task",
        "tensorImageSize": "3D" if settings.modality == "CT" else "4D",
        "modality": modality,
        "labels": LABELS,
        "numTraining": len(training),
        "numTest": len(test),
        "training": training,
        "test": test,
    }
    with atomic_path(folder / "dataset.json") as temporary:
        temporary.write_text(json.dumps(meta, indent=2) + "\n")
    return folder
