"""plans.json: what the pipeline will do with a dataset. Human-editable, versioned, plain data.

Every later stage reads its settings from here, so changing a hyper-parameter means editing this
file, never subclassing anything. ``Plans.from_dict`` checks every field once, when plans are
loaded: unknown keys, JSON types and allowed ranges, each refusal naming the field path
(``data.window_slices: expected an odd int >= 1, got "five"``), so a hand edit or a ``--set``
override can never reach the workers or the trainer as a wrong value.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ..files import load_json, save_json
from ..io import AXIS_OF_LETTER
from ..paths import TranssegError
from .backbones import backbone_problem, patch_size
from .schema import (FieldError, Rule, Schema, int_at_least, non_empty_string, number_above, number_in,
                     odd_int_at_least, one_of, pair)

PLANS_VERSION = 1
# allowed names; the code that implements each set keeps a registry with the same keys (tested)
NORMALIZATION_SCHEMES = ("ct", "mr_robust")                     # preprocessing.normalization.WINDOWS
DATA_INTERPOLATIONS = ("linear", "cubic")                       # preprocessing.resampling
LABEL_INTERPOLATIONS = ("nearest", "linear_onehot")
INFLATIONS = ("center", "average", "none")                      # model.inflation.DEPTH_INFLATIONS
PREDICT_MODES = ("center", "all")                               # model.config.PREDICT_MODES
MIXED_PRECISION = ("bf16", "fp16", "fp32")
ROTATIONS = ("quarter_turns", "uniform")
DATA_DTYPES = ("float16", "float32")
AUGMENTATION_PRESETS = ("paper", "nnunet")                      # training.augmentation_nnunet.PRESETS


@dataclass
class ChannelNormalization:
    """How one channel becomes network input in [-1, 1].

    ``ct``: clip to ``clip`` (HU) for every case, then map linearly to [-1, 1].
    ``mr_robust``: per case, clip to the ``percentiles`` of that case's non-zero voxels (the upper
    one instead of the maximum, so a single hot voxel cannot squash the rest), then map to [-1, 1].
    """

    scheme: str                                  # 'ct' or 'mr_robust'
    clip: Optional[list[float]] = None           # ct: [low, high]
    percentiles: Optional[list[float]] = None    # mr_robust: [low, high], e.g. [0.0, 99.5]
    source: str = ""                             # where the numbers came from, for the reader


@dataclass
class DataPlan:
    reorient_to: Optional[str]                   # orientation code every case is turned to, or None
    slice_axis: int                              # numpy axis (of the possibly reoriented array) sliced
    in_plane_spacing: list[float]                # mm, the two remaining axes in array order
    slice_spacing: Optional[float]               # mm; None keeps each case's own slice spacing
    resolution: list[int]                        # network input (H, W), multiples of the patch size
    window_slices: int = 5                       # K neighbouring slices form one depth token
    window_stride: int = 1                       # distance between neighbouring slices of a window
    predict: str = "center"                      # the window predicts its centre slice
    normalization: list[ChannelNormalization] = field(default_factory=list)
    data_dtype: str = "float16"
    data_interpolation: str = "linear"           # 'linear' or 'cubic'
    label_interpolation: str = "nearest"         # 'nearest' or 'linear_onehot'
    label_values: list[int] = field(default_factory=lambda: [0, 1])   # file value of class index i
    label_names: list[str] = field(default_factory=lambda: ["background", "foreground"])


@dataclass
class ModelPlan:
    """Fields passed to the model builder; channel count, classes, resolution and K come from DataPlan."""

    backbone: str = "beit_base_patch16_224.in22k_ft_in22k"
    pretrained: Optional[str] = "timm"           # 'timm', 'timm:<name>', or None for random init
    pretrained_file: Optional[str] = None
    inflation: str = "center"
    decoder_channels: int = 768
    drop_path_rate: float = 0.1
    decoder_dropout: float = 0.1                 # dropout before UPerNet's classifier


@dataclass
class AugmentationPlan:
    """The paper's augmentation (Table 6; the original code's MONAI pipeline), per training window.

    Geometry is the same for all K slices and the label. Zoom scales the slice by a factor drawn
    uniformly from ``zoom_range`` and is cropped or padded back to the input size; each of the three
    window axes (slices, rows, columns) is flipped with ``flip_probability``; ``rotation`` is
    'quarter_turns' (k x 90 degrees, the original code) or 'uniform' (within +-``rotation_degrees``).
    The intensity shift is drawn from +-``intensity_shift``: the paper's +-0.1 on its [0, 1] range
    is +-0.2 on our [-1, 1] range.
    """

    zoom_range: list[float] = field(default_factory=lambda: [0.5, 2.0])
    zoom_probability: float = 1.0
    flip_probability: float = 0.1
    rotation_probability: float = 0.1
    rotation: str = "quarter_turns"              # 'quarter_turns' or 'uniform'
    rotation_degrees: float = 15.0               # used by 'uniform'
    intensity_shift: float = 0.2
    intensity_shift_probability: float = 0.5
    preset: str = "paper"                        # 'nnunet' adds nnU-Net's 2D intensity transforms (training/augmentation_nnunet.py)


@dataclass
class TrainingPlan:
    global_batch_size: int = 16
    batch_size_per_gpu: int = 16
    steps: int = 25_000
    optimizer: str = "adamw"
    learning_rate: float = 3e-5
    weight_decay: float = 0.05
    warmup_steps: int = 20
    schedule: str = "warmup_linear"              # linear warm-up then linear decay ("slanted triangular")
    loss: str = "dice_focal"
    num_folds: int = 5
    mixed_precision: str = "bf16"                # 'bf16' (CUDA autocast), 'fp16' (with a grad scaler) or 'fp32'
    validation_precision: str = "auto"           # the network at validation: 'auto' (bf16 on CUDA and on CPUs
                                                 # with native bf16), 'fp32' or 'bf16' (transseg_predict --precision)
    foreground_oversampling: float = 0.33
    gradient_clip: float = 1.0                   # max global gradient norm; 0 switches clipping off
    val_every: int = 500                         # steps between validations (and checkpoint_latest.pt)
    save_every: int = 250                        # steps between checkpoint_latest.pt writes
    validation_ema: float = 0.9                  # weight of the old value in the EMA that picks checkpoint_best
    seed: int = 0
    loader_workers: Optional[int] = None         # data-loader processes per GPU; None = the CPUs shared out, at most 8
    distributed_timeout_minutes: float = 60.0    # longest wait at a collective (ranks) before the run fails
    gpu_memory_target_gb: float = 24.0
    estimated_memory_gb: float = 0.0             # the memory model's figure for batch_size_per_gpu
    augmentation: AugmentationPlan = field(default_factory=AugmentationPlan)


# DataPlan fields that only the network and the window sampler read, never preprocessing: plans that
# differ in nothing else share one folder of preprocessed cases (``Plans.data_identifier``)
NOT_PREPROCESSING_FIELDS = ("resolution", "window_slices", "window_stride", "predict", "label_names")


@dataclass
class Plans:
    dataset_name: str
    data: DataPlan
    model: ModelPlan = field(default_factory=ModelPlan)
    training: TrainingPlan = field(default_factory=TrainingPlan)
    plans_name: str = "plans"
    data_identifier: Optional[str] = None        # folder of the preprocessed cases; None: the plans name
    schema_version: int = PLANS_VERSION
    decisions: list[str] = field(default_factory=list)   # one line per rule applied, for the reader

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict, source: str = "plans") -> "Plans":
        """Plans from plain JSON, every field checked; a TranssegError names ``source`` and the field path.

        Beyond each field's type and range: the model's names are looked up in timm's registry (a
        cached copy, so no torch import) and the resolution checked against the backbone's patch size.
        """
        version = d.get("schema_version") if isinstance(d, dict) else None
        if version != PLANS_VERSION:
            raise TranssegError(f"{source}: schema_version {version}, this TransSeg reads {PLANS_VERSION}; "
                                f"rerun transseg_plan_experiment.")
        try:
            plans = PLANS_SCHEMA.build(cls, d)
            _check_backbone(plans)
        except FieldError as error:
            raise TranssegError(f"{source}: {error}.") from None
        return plans

    def content_hash(self) -> str:
        """A short hash of everything preprocessing depends on: the data section but NOT_PREPROCESSING_FIELDS.

        A field left out here must never be read by preprocessing (tests/test_plan_variants.py
        preprocesses with each changed and compares); a new field is hashed unless listed.
        """
        data = {k: v for k, v in dataclasses.asdict(self.data).items() if k not in NOT_PREPROCESSING_FIELDS}
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]

    def cases_folder_name(self, plans_name: Optional[str] = None) -> str:
        """The preprocessed cases' folder under the dataset folder: ``data_identifier``, else the plans name."""
        return self.data_identifier or plans_name or self.plans_name


# ------------------------------------------------------------------------------- what is allowed
def _is_orientation(code: str) -> bool:
    letters = code.upper()
    return len(letters) == 3 and set(letters) <= set(AXIS_OF_LETTER) and \
        len({AXIS_OF_LETTER[c] for c in letters}) == 3


def _is_label_list(values: list[int]) -> bool:
    return len(values) >= 2 and values[0] == 0 and len(set(values)) == len(values)


NUMBER = Rule("a number")
PROBABILITY = number_in(0, 1)
POSITIVE_INT = int_at_least(1)
PLANS_SCHEMA_RULES = {
    ChannelNormalization: {
        "scheme": one_of(*NORMALIZATION_SCHEMES),
        "clip": pair(NUMBER, "<"),
        "percentiles": pair(number_in(0, 100), "<"),
    },
    DataPlan: {
        "reorient_to": Rule('an orientation code such as "LPS" (one of L/R, A/P and I/S each)', _is_orientation),
        "slice_axis": one_of(0, 1, 2),
        "in_plane_spacing": pair(number_above(0)),
        "slice_spacing": number_above(0),
        "resolution": pair(POSITIVE_INT),
        "window_slices": odd_int_at_least(1),
        "window_stride": POSITIVE_INT,
        "predict": one_of(*PREDICT_MODES),
        "normalization": Rule("a non-empty list of channel normalisations", lambda v: len(v) >= 1),
        "data_dtype": one_of(*DATA_DTYPES),
        "data_interpolation": one_of(*DATA_INTERPOLATIONS),
        "label_interpolation": one_of(*LABEL_INTERPOLATIONS),
        "label_values": Rule("a list of at least two distinct ints, 0 (background) first", _is_label_list),
    },
    ModelPlan: {
        "backbone": non_empty_string(),
        "pretrained": Rule('"timm", "timm:<timm model name>"',
                           lambda v: v == "timm" or (v.startswith("timm:") and len(v) > 5)),
        "inflation": one_of(*INFLATIONS),
        "decoder_channels": POSITIVE_INT,
        "drop_path_rate": number_in(0, 1, high_inclusive=False),
        "decoder_dropout": number_in(0, 1, high_inclusive=False),
    },
    AugmentationPlan: {
        "zoom_range": pair(number_above(0), "<="),
        "zoom_probability": PROBABILITY,
        "flip_probability": PROBABILITY,
        "rotation_probability": PROBABILITY,
        "rotation": one_of(*ROTATIONS),
        "rotation_degrees": number_in(0, 180),
        "intensity_shift": number_above(0, inclusive=True),
        "intensity_shift_probability": PROBABILITY,
        "preset": one_of(*AUGMENTATION_PRESETS),
    },
    TrainingPlan: {
        "global_batch_size": POSITIVE_INT,
        "batch_size_per_gpu": POSITIVE_INT,
        "steps": POSITIVE_INT,
        "optimizer": non_empty_string(),       # the trainer's registries check the names
        "learning_rate": number_above(0),
        "weight_decay": number_above(0, inclusive=True),
        "warmup_steps": int_at_least(0),
        "schedule": non_empty_string(),
        "loss": non_empty_string(),
        "num_folds": int_at_least(2),
        "mixed_precision": one_of(*MIXED_PRECISION),
        "validation_precision": one_of("auto", "fp32", "bf16"),
        "foreground_oversampling": PROBABILITY,
        "gradient_clip": number_above(0, inclusive=True),
        "val_every": POSITIVE_INT,
        "save_every": POSITIVE_INT,
        "validation_ema": number_in(0, 1, high_inclusive=False),
        "seed": Rule("an int in [0, 2**32 - 1]", lambda v: 0 <= v < 2 ** 32),
        "loader_workers": int_at_least(0),
        "distributed_timeout_minutes": number_above(0),
        "gpu_memory_target_gb": number_above(0),
        "estimated_memory_gb": number_above(0, inclusive=True),
    },
    Plans: {
        "dataset_name": non_empty_string(),
        "plans_name": Rule("a plain file name (letters, digits, '_', '-', '.'; it names the plans file and "
                           "the case folder)", lambda v: re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", v) is not None),
        "data_identifier": Rule("a plain folder name (letters, digits, '_', '-', '.') beside the plans file",
                                lambda v: re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", v) is not None),
    },
}


def _check_normalization(scheme: ChannelNormalization, path: str) -> None:
    if scheme.scheme == "ct" and scheme.clip is None:
        raise FieldError(f'{path}.clip: expected [low, high] in HU for scheme "ct", got null')


def _check_data(data: DataPlan, path: str) -> None:
    if len(data.label_names) != len(data.label_values):
        raise FieldError(f"{path}.label_names: expected {len(data.label_values)} names, one per label value, "
                         f"got {len(data.label_names)}")


def _check_backbone(plans: Plans) -> None:
    """Names against timm's registry; the resolution against the patch size the backbone embeds."""
    problem = backbone_problem(plans.model.backbone)
    if problem:
        raise FieldError(f"model.backbone: {problem}")
    if plans.model.pretrained and plans.model.pretrained.startswith("timm:"):
        problem = backbone_problem(plans.model.pretrained[5:], family=False)
        if problem:
            raise FieldError(f"model.pretrained: {problem}")
    patch = patch_size(plans.model.backbone)
    if any(r % patch for r in plans.data.resolution):
        raise FieldError(f"data.resolution: expected multiples of the patch size {patch} of "
                         f"{plans.model.backbone}, got {plans.data.resolution}")


PLANS_SCHEMA = Schema(rules=PLANS_SCHEMA_RULES,
                      checks={ChannelNormalization: _check_normalization, DataPlan: _check_data})


def plans_path(preprocessed_dataset_folder: Path, plans_name: str = "plans") -> Path:
    return Path(preprocessed_dataset_folder) / f"{plans_name}.json"


def save_plans(plans: Plans, path: Path) -> None:
    save_json(plans.to_dict(), path)


def load_plans(path: Path) -> Plans:
    return Plans.from_dict(load_json(path), str(path))
