"""postprocessing.json: which stray components to remove from a prediction, and removing them.

Two kinds of rule, nnU-Net's: keep only the largest connected component of all foreground
together (``largest_foreground_component``), and, for each listed label value, keep only that
label's largest component (``largest_component_labels``). Removed voxels become background (0).
The foreground rule runs first. Which rules a model gets is *measured* on its cross-validation
predictions (``transseg_find_best_configuration``); this module only stores and applies them, so
prediction can import it without anything above the inference floor.

Components are 26-connected (every face, edge and corner neighbour, scikit-image's and nnU-Net's
default) and found with acvl-utils' ``generic_filter_components_cc3d``. Its ready-made
``remove_all_but_largest_component`` computes ``max(sizes)`` once per component: 72 s on a
200x512x512 mask with 52,000 specks, where the linear filter below with cc3d takes 0.4 s
(``benchmarks/postprocessing.py``, documentation/benchmarks.md).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

import numpy as np

from .files import load_json, save_json
from .io import read_label, write_image
from .paths import TranssegError
from .planning.schema import FieldError, Rule, Schema, int_at_least

POSTPROCESSING_FILE = "postprocessing.json"
POSTPROCESSING_VERSION = 1
CONNECTIVITY = 26
PathLike = Union[str, Path]


@dataclass
class PostprocessingRules:
    """What to remove; ``measurements`` records why (Dice before and after each step tried)."""

    largest_foreground_component: bool = False
    largest_component_labels: list[int] = field(default_factory=list)
    chosen_for: str = ""                        # the configuration or ensemble the rules were measured on
    measurements: list[dict] = field(default_factory=list)
    schema_version: int = POSTPROCESSING_VERSION

    @property
    def is_identity(self) -> bool:
        return not self.largest_foreground_component and not self.largest_component_labels

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict, source: str = POSTPROCESSING_FILE) -> "PostprocessingRules":
        version = data.get("schema_version") if isinstance(data, dict) else None
        if version != POSTPROCESSING_VERSION:
            raise TranssegError(f"{source}: schema_version {version}, this TransSeg reads {POSTPROCESSING_VERSION}; "
                                f"rerun transseg_find_best_configuration.")
        try:
            return _SCHEMA.build(cls, data)
        except FieldError as error:
            raise TranssegError(f"{source}: {error}.") from None

    def apply(self, labels: np.ndarray) -> np.ndarray:
        return apply_postprocessing(labels, self)


_SCHEMA = Schema(rules={PostprocessingRules: {
    "largest_component_labels": Rule("a list of distinct foreground label values (ints >= 1)",
                                     lambda v: len(set(v)) == len(v) and all(x >= 1 for x in v)),
    "schema_version": int_at_least(1),
}}, checks={})


def _keep_largest(ids: list[int], sizes: list[int]) -> list[int]:
    """The ids of the largest component(s); linear in the number of components (ties are all kept)."""
    if not sizes:
        return []
    largest = max(sizes)
    return [i for i, size in zip(ids, sizes) if size == largest]


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 26-connected component of a boolean mask (all of the largest, if several tie)."""
    from acvl_utils.morphology.morphology_helper import generic_filter_components_cc3d   # scikit-image import: ~1 s

    mask = np.ascontiguousarray(mask, dtype=bool)
    if not mask.any():
        return mask
    return generic_filter_components_cc3d(mask, _keep_largest, connectivity=CONNECTIVITY)


def remove_all_but_largest(labels: np.ndarray, values: Optional[list[int]] = None) -> np.ndarray:
    """A copy of ``labels`` where the chosen region keeps only its largest component; the rest becomes 0.

    ``values`` None: the region is all foreground together; else the voxels holding one of ``values``.
    """
    region = labels != 0 if values is None else np.isin(labels, values)
    result = np.array(labels, copy=True)
    result[region & ~largest_component(region)] = 0
    return result


def apply_postprocessing(labels: np.ndarray, rules: PostprocessingRules) -> np.ndarray:
    """Apply ``rules`` to a label map of file values (Z, Y, X); the input is left unchanged."""
    result = labels
    if rules.largest_foreground_component:
        result = remove_all_but_largest(result)
    for value in rules.largest_component_labels:
        result = remove_all_but_largest(result, [value])
    return result if result is not labels else np.array(labels, copy=True)


def postprocessing_path(model_folder: PathLike) -> Path:
    return Path(model_folder) / POSTPROCESSING_FILE


def save_postprocessing(rules: PostprocessingRules, model_folder: PathLike) -> Path:
    path = postprocessing_path(model_folder)
    save_json(rules.to_dict(), path)
    return path


def load_postprocessing(model_folder: PathLike) -> Optional[PostprocessingRules]:
    """The model folder's rules, or None when it has no postprocessing.json."""
    path = postprocessing_path(model_folder)
    if not path.is_file():
        return None
    return PostprocessingRules.from_dict(load_json(path), str(path))


def postprocess_file(source: PathLike, destination: PathLike, rules: PostprocessingRules) -> Path:
    """Read a label file, apply ``rules`` and write the result with the same geometry (atomically)."""
    labels, geometry = read_label(source)
    write_image(apply_postprocessing(labels, rules), geometry, destination)
    return Path(destination)


__all__ = ["PostprocessingRules", "POSTPROCESSING_FILE", "apply_postprocessing", "largest_component",
           "remove_all_but_largest", "load_postprocessing", "save_postprocessing", "postprocessing_path",
           "postprocess_file"]
