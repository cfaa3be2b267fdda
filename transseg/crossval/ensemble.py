"""Ensembles of configurations: the mean of their probabilities, case by case.

Each member's ``CASE.npz`` (``transseg_train --npz``'s validation, or ``transseg_predict
--save_probabilities``) holds float16 probabilities on *its own* preprocessed grid, which differs
between configurations whose plans resample differently (spacing, resolution). The common ground
is the scan's cropped grid before resampling, which depends only on the scan, the orientation and
the slice axis: each member's probabilities are resampled there class by class (linearly, as
``restore_segmentation`` does before its arg-max), averaged, and arg-maxed once. Members planned
with another orientation or slice axis are refused with a message that says so.
"""
from __future__ import annotations

import json
import logging
import zipfile
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
from tqdm import tqdm

from ..files import TEMPORARY_MARKER
from ..paths import TranssegError
from ..preprocessing import restore_cropped_classes, write_restored
from ..preprocessing.preprocessor import smallest_unsigned
from ..preprocessing.resampling import argmax_of_resampled, resample_volume

logger = logging.getLogger(__name__)
PathLike = Union[str, Path]
# what must agree between members for their cropped grids to be one grid
_COMMON_GRID = ("geometry", "orientation_change", "bbox", "shape_before_crop", "slice_first_order",
                "shape_before_resampling", "label_values")


def read_probabilities(path: PathLike) -> tuple[np.ndarray, dict]:
    """(probabilities (C, Z, Y, X) float16, properties) from a CASE.npz; no pickle."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            probabilities = archive["probabilities"]
            properties = json.loads(archive["properties_json"].tobytes().decode("utf-8"))
    except FileNotFoundError:
        raise TranssegError(f"{path}: file not found.") from None
    except (KeyError, ValueError, OSError, zipfile.BadZipFile) as error:
        raise TranssegError(f"{path}: not a probabilities file with 'probabilities' and 'properties_json' "
                            f"({error}).") from None
    grid = properties.get("shape_after_resampling") if isinstance(properties, dict) else None
    if probabilities.ndim != 4 or grid is None or list(probabilities.shape[1:]) != list(grid):
        raise TranssegError(f"{path}: probabilities of shape {probabilities.shape} do not match the preprocessed "
                            f"grid {grid} of its properties.")
    return probabilities, properties


def _check_common_grid(paths: Sequence[Path], properties: Sequence[dict]) -> None:
    first = properties[0]
    for path, other in zip(paths[1:], properties[1:]):
        differing = [key for key in _COMMON_GRID if other.get(key) != first.get(key)]
        if differing:
            raise TranssegError(
                f"{path} and {paths[0]} cannot be ensembled: their cases differ in {', '.join(differing)}. "
                f"Ensembles need configurations planned with the same orientation, slice axis and labels "
                f"(spacing and resolution may differ).")


def ensemble_case(paths: Sequence[PathLike], output: PathLike, case: Optional[str] = None) -> Path:
    """Average the members' probabilities on the common cropped grid and write the label file ``output``
    (with ``case``: into the folder ``output``, named by :func:`output_name`)."""
    paths = [Path(p) for p in paths]
    members = [read_probabilities(p) for p in paths]
    _check_common_grid(paths, [properties for _, properties in members])
    properties = members[0][1]
    shape = properties["shape_before_resampling"]
    num_classes = members[0][0].shape[0]
    if any(p.shape[0] != num_classes for p, _ in members):
        raise TranssegError(f"{paths[0]}: members disagree on the number of classes.")

    def mean_scores():
        for index in range(num_classes):
            total = np.zeros(tuple(shape), np.float32)
            for probabilities, _ in members:
                total += resample_volume(probabilities[index], shape, "linear")
            yield index, total / len(members)

    classes = argmax_of_resampled(mean_scores(), shape, smallest_unsigned(num_classes - 1))
    if case is not None:
        output = Path(output) / output_name(properties, case)
    return write_restored(restore_cropped_classes(classes, properties), properties, output)


def output_name(properties: dict, case: str) -> str:
    """``CASE`` plus the ending of the case's label (or image) file, ``.nii.gz`` when unknown."""
    from ..io import image_suffix
    source = properties.get("label") or (properties.get("images") or [None])[0]
    return f"{case}{image_suffix(source) if source else '.nii.gz'}"


def ensemble_folders(inputs: Sequence[PathLike], output: PathLike, cases: Sequence[str] = ()) -> list[Path]:
    """Ensemble every case that has a CASE.npz in all input folders (or only ``cases``) into ``output``."""
    inputs = [Path(folder) for folder in inputs]
    if len(inputs) < 2:
        raise TranssegError("an ensemble needs at least two folders of probabilities.")
    available = [{p.name[:-len(".npz")] for p in folder.glob("*.npz") if not p.name.startswith(TEMPORARY_MARKER)}
                 if folder.is_dir() else set() for folder in inputs]
    for folder, found in zip(inputs, available):
        if not found:
            raise TranssegError(f"{folder}: no CASE.npz probabilities (predict with --save_probabilities, or train "
                                f"with --npz).")
    wanted = sorted(cases) if cases else sorted(set.intersection(*available))
    for folder, found in zip(inputs, available):
        missing = sorted(set(wanted) - found)
        if missing:
            raise TranssegError(f"{folder}: no probabilities for {len(missing)} case(s): {', '.join(missing[:5])}.")
    if not wanted:
        raise TranssegError(f"{', '.join(map(str, inputs))}: no case has probabilities in every folder.")
    Path(output).mkdir(parents=True, exist_ok=True)
    written = []
    for case in tqdm(wanted, desc="ensembling", unit="case", disable=None):
        written.append(ensemble_case([folder / f"{case}.npz" for folder in inputs], output, case))
    return written
