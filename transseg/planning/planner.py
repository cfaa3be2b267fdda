"""From fingerprint to plans: every rule here is written down in documentation/fingerprint_and_plans.md.

The rules, in order: a common orientation when cases disagree; the slice axis; in-plane spacing
and input resolution; slice-axis resampling; per-channel normalisation; backbone and decoder;
batch size from the memory model.
"""
from __future__ import annotations

import dataclasses
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from ..io import anatomical_axes, orientation_permutation
from ..paths import TranssegError
from .backbones import backbone_problem, describe_backbone
from .memory import batch_size_for_target, estimate_memory
from .plans import PLANS_SCHEMA_RULES, ChannelNormalization, DataPlan, ModelPlan, Plans, TrainingPlan
from .schema import FieldError, Schema, int_at_least, non_empty_string, number_above, one_of

PAPER_CT_CLIP = [-175.0, 250.0]          # Zhang et al. 2022, from the BCV/MSD CT recipes
MIN_RESOLUTION = 224                     # pre-trained ViTs saw 224 px; smaller images are upsampled
MAX_RESOLUTION = 512                     # larger slices are tiled by the sliding window at prediction
SPACING_TIE_TOLERANCE = 0.01             # spacings within 1 % are a tie
SLICE_SPACING_SPREAD = 2.0               # resample slices when max/min slice spacing exceeds this
ORIENTATION_PREFERENCE = ("IS", "AP", "LR")   # tie-break: axial, then coronal, then sagittal slices


@dataclass
class PlannerOptions:
    backbone: str = "beit_base_patch16_224.in22k_ft_in22k"
    pretrained: Optional[str] = "timm"
    pretrained_file: Optional[str] = None
    ct_clip: str = "foreground"              # 'foreground' (0.5/99.5 percentiles) or 'paper' ([-175, 250])
    window_slices: int = 5
    window_stride: int = 1
    inflation: str = "center"                # 'center' (the paper's best), 'average', 'none' (random depth kernel)
    decoder_channels: Optional[int] = None   # None: 768 for Base and larger, else the backbone width
    gpu_memory_target_gb: float = 24.0
    global_batch_size: int = 16
    min_resolution: int = MIN_RESOLUTION     # tests and CPU demos with tiny backbones plan smaller inputs


CT_CLIPS = ("foreground", "paper")
# the options that become plans fields are checked by the same rules as plans.json
OPTIONS_SCHEMA = Schema(rules={PlannerOptions: {
    "backbone": non_empty_string(),
    "window_slices": PLANS_SCHEMA_RULES[DataPlan]["window_slices"],
    "window_stride": PLANS_SCHEMA_RULES[DataPlan]["window_stride"],
    "inflation": PLANS_SCHEMA_RULES[ModelPlan]["inflation"],
    "decoder_channels": PLANS_SCHEMA_RULES[ModelPlan]["decoder_channels"],
    "pretrained": PLANS_SCHEMA_RULES[ModelPlan]["pretrained"],
    "global_batch_size": PLANS_SCHEMA_RULES[TrainingPlan]["global_batch_size"],
    "gpu_memory_target_gb": number_above(0),
    "min_resolution": int_at_least(1),
    "ct_clip": one_of(*CT_CLIPS),
}}, checks={})


def check_options(options: PlannerOptions) -> None:
    """Refuse bad options before any work, naming the option; the backbone is looked up in timm's registry."""
    try:
        OPTIONS_SCHEMA.build(PlannerOptions, dataclasses.asdict(options))
    except FieldError as error:
        raise TranssegError(f"planner option {error}.") from None
    problem = backbone_problem(options.backbone)
    if problem:
        raise TranssegError(f"backbone '{options.backbone}': {problem}.")
    if options.pretrained_file is not None and not Path(options.pretrained_file).is_file():
        raise TranssegError(f"{options.pretrained_file}: pre-trained weights file not found (--pretrained_file).")


def _oriented_cases(cases: list[dict], target: Optional[str]) -> list[dict]:
    """Spacing and cropped shape of each case as they will be after reorientation to ``target``."""
    oriented = []
    for case in cases:
        spacing, shape = np.array(case["spacing"]), np.array(case["shape_after_crop"])
        orientation = case["orientation"]
        if target is not None:
            axes, _ = orientation_permutation(orientation, target)
            spacing, shape, orientation = spacing[list(axes)], shape[list(axes)], target
        oriented.append({"spacing": spacing, "shape": shape, "orientation": orientation})
    return oriented


def choose_orientation(cases: list[dict], decisions: list[str]) -> Optional[str]:
    counts = Counter(c["orientation"] for c in cases)
    if len(counts) <= 1:
        decisions.append(f"orientation: all cases are {next(iter(counts), '?')}; no reorientation")
        return None
    target = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[0][0]
    decisions.append(f"orientation: cases mix {dict(counts)}; every case is reoriented to the most common, {target}")
    return target


def choose_slice_axis(median_spacing: np.ndarray, orientation: str, decisions: list[str]) -> int:
    coarsest = median_spacing.max()
    tied = [a for a in range(3) if median_spacing[a] >= coarsest * (1 - SPACING_TIE_TOLERANCE)]
    letters = anatomical_axes(orientation)
    axis = min(tied, key=lambda a: ORIENTATION_PREFERENCE.index(letters[a]))
    reason = ("the coarsest" if len(tied) == 1 else
              f"tied coarsest with axes {tied}; the {letters[axis]} axis is preferred ({orientation})")
    decisions.append(f"slice axis: {axis} (median spacing {median_spacing[axis]:.3g} mm, {reason})")
    return axis


def _round_to_multiple(value: float, multiple: int) -> int:
    return max(multiple, int(round(value / multiple)) * multiple)


def choose_in_plane(spacings: np.ndarray, shapes: np.ndarray, patch: int, decisions: list[str],
                    min_resolution: int = MIN_RESOLUTION) -> tuple[list[float], list[int]]:
    """Target in-plane spacing and input resolution from per-case (spacing, shape) of the two in-plane axes."""
    target = np.median(spacings, axis=0)
    median_size = np.median(shapes * spacings / target, axis=0)
    scale = max(1.0, min_resolution / median_size.min())
    if scale > 1.0:
        target = target / scale
        median_size = median_size * scale
        decisions.append(f"in-plane: slices of median size {np.round(median_size / scale, 1).tolist()} are "
                         f"small; upsampled {scale:.3g}x so the shorter side reaches {min_resolution}")
    floor = math.ceil(min_resolution / patch) * patch if scale > 1 else patch
    resolution = [min(MAX_RESOLUTION, max(floor, _round_to_multiple(s, patch))) for s in median_size]
    decisions.append(f"in-plane: spacing {np.round(target, 4).tolist()} mm (median), input resolution "
                     f"{resolution} (median slice size {np.round(median_size, 1).tolist()} rounded to a multiple "
                     f"of the patch size {patch}, at most {MAX_RESOLUTION})")
    return [float(t) for t in target], resolution


def choose_slice_spacing(slice_spacings: np.ndarray, decisions: list[str]) -> Optional[float]:
    spread = slice_spacings.max() / slice_spacings.min()
    if spread <= SLICE_SPACING_SPREAD:
        decisions.append(f"slice spacing: kept per case (spread {spread:.2f}x <= {SLICE_SPACING_SPREAD}x)")
        return None
    target = float(np.median(slice_spacings))
    decisions.append(f"slice spacing: resampled to the median {target:.3g} mm (spread {spread:.2f}x)")
    return target


def choose_normalization(channels: list[dict], ct_clip: str, decisions: list[str]) -> list[ChannelNormalization]:
    schemes = []
    for channel in channels:
        if channel["modality"] == "CT":
            stats = channel["foreground_intensity"]
            if ct_clip == "paper":
                clip, source = PAPER_CT_CLIP, "paper preset (Zhang et al. 2022)"
            elif stats["percentile_00_5"] is None:
                raise TranssegError("CT channel has no foreground voxels to set a clip window; use --ct_clip paper.")
            else:
                clip = [stats["percentile_00_5"], stats["percentile_99_5"]]
                source = "foreground 0.5/99.5 percentiles of the fingerprint"
            if clip[1] <= clip[0]:
                raise TranssegError(f"CT clip window {clip} is empty; use --ct_clip paper or edit the plans.")
            schemes.append(ChannelNormalization("ct", clip=[float(v) for v in clip], source=source))
        else:
            schemes.append(ChannelNormalization("mr_robust", percentiles=[0.5, 99.5],
                                                source="per case: [min(0, p0.5), p99.5] of non-zero voxels"))
        decisions.append(f"normalisation of channel '{channel['name']}': {schemes[-1].scheme} "
                         f"{schemes[-1].clip or schemes[-1].percentiles} ({schemes[-1].source})")
    return schemes


def plan_experiment(fingerprint: dict, options: PlannerOptions = PlannerOptions()) -> Plans:
    """Plans from a fingerprint; the options are checked first and the result as if loaded from disk."""
    check_options(options)
    cases = fingerprint["cases"]
    if not cases:
        raise TranssegError("The fingerprint lists no cases; nothing to plan.")
    decisions: list[str] = []
    reorient_to = choose_orientation(cases, decisions)
    oriented = _oriented_cases(cases, reorient_to)
    spacings = np.stack([c["spacing"] for c in oriented])
    shapes = np.stack([c["shape"] for c in oriented])
    slice_axis = choose_slice_axis(np.median(spacings, axis=0), oriented[0]["orientation"], decisions)
    in_plane_axes = [a for a in range(3) if a != slice_axis]
    backbone = describe_backbone(options.backbone)
    in_plane_spacing, resolution = choose_in_plane(spacings[:, in_plane_axes], shapes[:, in_plane_axes],
                                                   backbone.patch_size, decisions, options.min_resolution)
    slice_spacing = choose_slice_spacing(spacings[:, slice_axis], decisions)
    label_values = sorted((int(v) for v in fingerprint["labels"]), key=lambda v: (v != 0, v))   # background first
    data = DataPlan(
        reorient_to=reorient_to, slice_axis=slice_axis, in_plane_spacing=in_plane_spacing,
        slice_spacing=slice_spacing, resolution=resolution, window_slices=options.window_slices,
        window_stride=options.window_stride,
        normalization=choose_normalization(fingerprint["channels"], options.ct_clip, decisions),
        label_values=label_values, label_names=[fingerprint["labels"][str(v)] for v in label_values],
    )
    if label_values != list(range(len(label_values))):
        decisions.append(f"labels: values {label_values} are stored as classes 0..{len(label_values) - 1} "
                         f"and written back as the original values")
    decisions.append(f"window: {options.window_slices} slices, stride {options.window_stride}, predict the centre slice")
    decoder_channels = options.decoder_channels or (768 if backbone.width >= 768 else backbone.width)
    model = ModelPlan(backbone=options.backbone, pretrained=options.pretrained,
                      pretrained_file=options.pretrained_file, inflation=options.inflation,
                      decoder_channels=decoder_channels)
    training = plan_training(backbone, data, len(fingerprint["channels"]), decoder_channels, options, decisions)
    plans = Plans(dataset_name=fingerprint["dataset_name"], data=data, model=model, training=training,
                  decisions=decisions)
    return Plans.from_dict(plans.to_dict(), "the plans just made")   # nothing invalid is ever written


def plan_training(backbone, data: DataPlan, channels: int, decoder_channels: int, options: PlannerOptions,
                  decisions: list[str]) -> TrainingPlan:
    estimate = estimate_memory(backbone, tuple(data.resolution), data.window_slices, channels,
                               decoder_channels, len(data.label_values))
    batch = batch_size_for_target(estimate, options.gpu_memory_target_gb, options.global_batch_size)
    accumulation = math.ceil(options.global_batch_size / batch)
    if estimate.total_gb(batch) > options.gpu_memory_target_gb:
        decisions.append(f"batch: even the smallest batch ({batch}, batch norm needs two windows) is estimated at "
                         f"{estimate.total_gb(batch):.1f} GB, above the {options.gpu_memory_target_gb:g} GB target")
    decisions.append(f"batch: {batch} windows per GPU step (memory model: {estimate.total_gb(batch):.1f} GB of a "
                     f"{options.gpu_memory_target_gb:g} GB target, an estimate); global batch "
                     f"{options.global_batch_size} reached by {accumulation}x accumulation on one GPU")
    return TrainingPlan(global_batch_size=options.global_batch_size, batch_size_per_gpu=batch,
                        gpu_memory_target_gb=options.gpu_memory_target_gb,
                        estimated_memory_gb=round(estimate.total_gb(batch), 2))
