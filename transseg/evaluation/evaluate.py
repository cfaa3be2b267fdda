"""Score a folder of predictions against a folder of reference label maps and write summary.json.

Cases are matched by name (the file name without its image ending), so ``CASE.nii.gz`` in both
folders pair up. Every reference case needs a prediction; predictions without a reference are
ignored with a warning. Each pair must share one grid (size, spacing, origin, direction). Metrics
are computed per case in worker processes (:func:`transseg.parallel.run_cases`); nothing is written
unless every case succeeded.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional, Sequence, Union

from ..dataset import is_hidden_junk, load_dataset, strip_suffix
from ..files import TEMPORARY_MARKER, save_json
from ..io import SUPPORTED_SUFFIXES, image_suffix, read_image, read_label
from ..parallel import raise_on_failures, run_cases
from ..paths import TranssegError, find_dataset_folder, get_root
from .metrics import BOTH_EMPTY, DEFAULT_TOLERANCE_MM, METRICS, evaluate_case, mean_metrics, present_values

logger = logging.getLogger(__name__)
PathLike = Union[str, Path]
SUMMARY_NAME = "summary.json"
OVERLAY_FOLDER = "overlays"
_SHOWN = 10   # names listed in a message before "and N more"


def class_key(value: int, name: str) -> str:
    """The key of one class in summary.json: ``"1_liver"``."""
    return f"{value}_{name}"


def default_label_name(value: int) -> str:
    return f"label{value}"


def _listing(names: Sequence[str]) -> str:
    shown = ", ".join(names[:_SHOWN])
    return shown + (f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else "")


def list_label_files(folder: PathLike) -> dict[str, Path]:
    """Case name -> file for every image file in ``folder`` (hidden files and temporaries skipped)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise TranssegError(f"{folder}: folder not found.")
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if (not path.is_file() or is_hidden_junk(path) or path.name.startswith(TEMPORARY_MARKER)
                or image_suffix(path) not in SUPPORTED_SUFFIXES):
            continue
        case = strip_suffix(path.name)
        if case in files:
            raise TranssegError(f"{folder}: case '{case}' has two files, {files[case].name} and {path.name}; "
                                f"keep one.")
        files[case] = path
    return files


def find_case_image(folder: PathLike, case: str) -> Optional[Path]:
    """The image of ``case`` in ``folder``: MSD ``CASE.nii.gz`` or nnU-Net ``CASE_0000.nii.gz`` (any ending)."""
    folder = Path(folder)
    for stem in (case, f"{case}_0000"):
        for suffix in SUPPORTED_SUFFIXES:
            if (folder / f"{stem}{suffix}").is_file():
                return folder / f"{stem}{suffix}"
    return None


def labels_from_dataset(dataset: PathLike, raw_root: Optional[PathLike] = None) -> dict[int, str]:
    """Label value -> name from a dataset.json file, a folder holding one, or a dataset id in the raw root."""
    path = Path(dataset).expanduser()
    if path.is_file():
        if path.name != "dataset.json":
            raise TranssegError(f"{path}: expected a dataset.json file, a folder holding one, or a dataset id.")
        return load_dataset(path.parent).labels
    if path.is_dir():
        return load_dataset(path).labels      # says so if the folder holds no dataset.json
    if path.suffix == ".json" or len(path.parts) > 1:
        raise TranssegError(f"{path}: not found (expected a dataset.json, a folder holding one, or a dataset id).")
    return load_dataset(find_dataset_folder(str(dataset), get_root("raw", raw_root))).labels


@dataclass(frozen=True)
class _CaseJob:
    reference: Path
    prediction: Path
    labels: Optional[tuple[int, ...]]          # None: every value present
    names: dict[int, str]
    tolerance_mm: float
    overlay: Optional[Path] = None
    image: Optional[Path] = None


def read_label_pair(reference_path: Path, prediction_path: Path):
    """(reference, prediction, geometry) of two label files that must lie on one grid."""
    reference, reference_geometry = read_label(reference_path)
    prediction, prediction_geometry = read_label(prediction_path)
    problems = reference_geometry.agrees_with(prediction_geometry)
    if problems:
        raise TranssegError(f"{prediction_path}: geometry differs from its reference {reference_path}: "
                            f"{'; '.join(problems)}.")
    return reference, prediction, reference_geometry


def _evaluate_one(job: _CaseJob) -> dict:
    reference, prediction, geometry = read_label_pair(job.reference, job.prediction)
    spacing = geometry.spacing_zyx
    metrics = evaluate_case(reference, prediction, spacing, job.labels, job.tolerance_mm)
    result = {"metrics": metrics, "reference_values": present_values(reference),
              "prediction_values": present_values(prediction)}
    if job.overlay is not None:
        from .overlays import save_overlay   # matplotlib only where overlays are drawn
        image = None
        if job.image is not None:
            data, image_geometry = read_image(job.image)
            problems = geometry.agrees_with(image_geometry)
            if problems:
                raise TranssegError(f"{job.image}: image grid differs from the reference {job.reference}: "
                                    f"{'; '.join(problems)}.")
            image = data[0]
        names = {value: job.names.get(value, default_label_name(value)) for value in metrics}
        save_overlay(job.overlay, reference, prediction, spacing, names, image, title=strip_suffix(job.reference.name),
                     dice={value: entry["dice"] for value, entry in metrics.items()})
    return result


def _match_cases(reference_folder: Path, prediction_folder: Path,
                 cases: Optional[Sequence[str]]) -> tuple[dict[str, Path], dict[str, Path]]:
    references = list_label_files(reference_folder)
    predictions = list_label_files(prediction_folder)
    if cases is not None:
        unknown = sorted(set(cases) - set(references))
        if unknown:
            raise TranssegError(f"{reference_folder}: no reference for {len(unknown)} case(s): {_listing(unknown)}.")
        references = {case: references[case] for case in sorted(set(cases))}
    if not references:
        raise TranssegError(f"{reference_folder}: no label files ({', '.join(SUPPORTED_SUFFIXES)}) to evaluate.")
    missing = sorted(set(references) - set(predictions))
    if missing:
        raise TranssegError(f"{prediction_folder}: {len(missing)} of {len(references)} reference case(s) have no "
                            f"prediction: {_listing(missing)}.")
    extra = sorted(set(predictions) - set(references))
    if extra:
        logger.warning("%s: %d prediction(s) without a reference in %s are ignored: %s", prediction_folder,
                       len(extra), reference_folder, _listing(extra))
    return references, {case: predictions[case] for case in references}


def _foreground(labels: Mapping[int, str]) -> dict[int, str]:
    """The classes to score from a value -> name mapping: every one but background 0."""
    foreground = {int(value): str(name) for value, name in sorted(labels.items(), key=lambda i: int(i[0]))
                  if int(value) != 0}
    if not foreground:
        raise TranssegError(f"no foreground label to evaluate among {dict(labels)}.")
    return foreground


def _warn_undeclared(outcomes, references: dict[str, Path], predictions: dict[str, Path], declared: set[int]) -> None:
    """Values in a file that the label set does not declare are not scored: say where they are."""
    for outcome in outcomes:
        for side, files in (("reference", references), ("prediction", predictions)):
            undeclared = sorted(set(outcome.result[f"{side}_values"]) - declared)
            if undeclared:
                logger.warning("%s: label value(s) %s not among the evaluated labels %s; not scored.",
                               files[outcome.name], undeclared, sorted(declared))


def summarise(per_case: dict[str, dict], labels: dict[int, str], tolerance_mm: float) -> dict:
    """Means per class over cases, and the foreground mean (mean of the per-class means)."""
    keys = {value: class_key(value, name) for value, name in labels.items()}
    mean = {}
    for value, key in keys.items():
        entries = [case["metrics"][key] for case in per_case.values()]
        mean[key] = {**mean_metrics(entries),
                     "cases_with_reference": sum(entry["reference_voxels"] > 0 for entry in entries),
                     "cases_with_prediction": sum(entry["prediction_voxels"] > 0 for entry in entries)}
    return {
        "labels": {str(value): name for value, name in labels.items()},
        "tolerance_mm": tolerance_mm,
        "conventions": {
            "both_empty": dict(BOTH_EMPTY),
            "one_empty": {"dice": 0.0, "iou": 0.0, "nsd": 0.0, "hd95": "image diagonal in mm"},
            "means": "plain means over all cases; every value is defined, none is skipped",
        },
        "num_cases": len(per_case),
        "foreground_mean": mean_metrics(mean.values()),
        "mean": mean,
        "cases": per_case,
    }


def evaluate_folder(reference_folder: PathLike, prediction_folder: PathLike, labels: Optional[Mapping[int, str]],
                    output_file: Optional[PathLike] = None, num_processes: int = 1,
                    tolerance_mm: float = DEFAULT_TOLERANCE_MM, overlays: bool = False,
                    image_folder: Optional[PathLike] = None, *, cases: Optional[Sequence[str]] = None) -> dict:
    """Score every reference case's prediction; returns the summary and writes it to ``output_file`` if given.

    ``labels``: value -> name of the classes to score (background 0 is skipped); None scores every
    non-zero value found in the reference files. ``cases``: score only these reference cases (a
    fold's validation cases against a folder of all ground truths). Overlays go to
    ``<output_file's folder>/overlays/CASE.png`` (the prediction folder when there is no output file).
    """
    reference_folder, prediction_folder = Path(reference_folder), Path(prediction_folder)
    if not (tolerance_mm >= 0 and tolerance_mm != float("inf")):
        raise TranssegError(f"the NSD tolerance must be a finite number >= 0 mm, got {tolerance_mm}.")
    references, predictions = _match_cases(reference_folder, prediction_folder, cases)
    overlay_folder = (Path(output_file).parent if output_file is not None else prediction_folder) / OVERLAY_FOLDER
    images: dict[str, Optional[Path]] = {case: None for case in references}
    if overlays and image_folder is not None:
        images = {case: find_case_image(image_folder, case) for case in references}
        lost = sorted(case for case, path in images.items() if path is None)
        if lost:
            raise TranssegError(f"{image_folder}: no image (CASE.nii.gz or CASE_0000.nii.gz) for {len(lost)} "
                                f"case(s): {_listing(lost)}.")
    declared = _foreground(labels) if labels is not None else None
    scored = tuple(declared) if declared is not None else None    # None: whatever each case holds
    jobs = [(case, _CaseJob(references[case], predictions[case], scored, declared or {}, float(tolerance_mm),
                            overlay_folder / f"{case}.png" if overlays else None, images[case]))
            for case in references]
    outcomes = run_cases(_evaluate_one, jobs, max(1, num_processes), "evaluating")
    raise_on_failures(outcomes, "Evaluation")

    classes = declared if declared is not None else {
        value: default_label_name(value) for value in sorted(set().union(*(o.result["reference_values"]
                                                                         for o in outcomes)))}
    if not classes:
        raise TranssegError(f"{reference_folder}: the reference files hold no foreground label; nothing to evaluate "
                            f"(pass the labels from dataset.json with -d to score absent classes).")
    _warn_undeclared(outcomes, references, predictions, set(classes))
    per_case = {}
    for outcome in outcomes:
        metrics = outcome.result["metrics"]
        per_case[outcome.name] = {
            "reference": str(references[outcome.name]),
            "prediction": str(predictions[outcome.name]),
            "metrics": {class_key(value, name): metrics.get(value, {**BOTH_EMPTY, "reference_voxels": 0,
                                                                   "prediction_voxels": 0})
                        for value, name in classes.items()},
        }
    summary = {"reference_folder": str(reference_folder), "prediction_folder": str(prediction_folder),
               **summarise(per_case, classes, float(tolerance_mm))}
    if overlays:
        summary["overlay_folder"] = str(overlay_folder)
    if output_file is not None:
        save_json(summary, output_file)
        logger.info("Wrote %s", output_file)
    _log_means(summary)
    return summary


def _log_means(summary: dict) -> None:
    for key, entry in summary["mean"].items():
        logger.info("%-24s " + "  ".join(f"{m} {entry[m]:.4f}" for m in METRICS), key)
    logger.info("%-24s " + "  ".join(f"{m} {summary['foreground_mean'][m]:.4f}" for m in METRICS), "foreground mean")


def score_case(reference: PathLike, prediction: PathLike, labels: Mapping[int, str],
               tolerance_mm: float = DEFAULT_TOLERANCE_MM) -> dict:
    """One case's entry of summary.json's ``cases`` (every foreground class of ``labels`` scored), for
    callers that score cases where they are made (each training rank its own validation cases) and
    merge them with :func:`summarise`."""
    declared = _foreground(labels)
    reference_map, prediction_map, geometry = read_label_pair(Path(reference), Path(prediction))
    metrics = evaluate_case(reference_map, prediction_map, geometry.spacing_zyx, tuple(declared), float(tolerance_mm))
    return {"reference": str(reference), "prediction": str(prediction),
            "metrics": {class_key(value, name): metrics.get(value, {**BOTH_EMPTY, "reference_voxels": 0,
                                                                   "prediction_voxels": 0})
                        for value, name in declared.items()}}
