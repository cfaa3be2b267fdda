"""Preprocessing: cropped, resampled, normalised case arrays (CASE.npz) and how to undo them (CASE.json).

What the other stages call:

- training: :func:`list_cases`, :func:`load_case` (memory-mapped data/seg + properties), :func:`read_window` (K slices
  around a centre, a view inside the volume), ``properties['class_locations']`` for oversampling;
- prediction: :func:`preprocess_case` (same pipeline on a case's files, no label needed), then
  :func:`restore_segmentation` / :func:`export_segmentation` to go back to the original grid.
"""
from .case_store import (case_is_current, list_cases, load_case, load_properties, open_member, read_window, save_case,
                         window_indices, write_npz)
from .entrypoints import ground_truth_folder, preprocessed_cases_folder, run_preprocess
from .preprocessor import (export_segmentation, preprocess_arrays, preprocess_case, restore_cropped_classes,
                           restore_segmentation, write_restored)

__all__ = [
    "case_is_current", "list_cases", "load_case", "load_properties", "open_member", "read_window", "save_case",
    "window_indices", "write_npz", "ground_truth_folder", "preprocessed_cases_folder", "run_preprocess",
    "export_segmentation", "preprocess_arrays", "preprocess_case", "restore_cropped_classes", "restore_segmentation",
    "write_restored",
]
