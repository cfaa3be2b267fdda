"""Evaluation: per-case metrics (numpy/scipy), folder evaluation into summary.json, overlay pictures."""
from .evaluate import evaluate_folder, labels_from_dataset
from .metrics import DEFAULT_TOLERANCE_MM, binary_metrics, evaluate_case

__all__ = ["evaluate_folder", "evaluate_case", "binary_metrics", "labels_from_dataset", "DEFAULT_TOLERANCE_MM"]
