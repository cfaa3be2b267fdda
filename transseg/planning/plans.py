"""plans.json: what the pipeline will do with a dataset. Human-editable, versioned, plain data.

Every later stage reads its settings from here, so changing a hyper-parameter means editing this
file, never subclassing anything. ``Plans.from_dict`` rejects unknown keys, so a typo in a hand
edit is an error that names the key instead of a silently ignored setting.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..files import load_json, save_json
from ..paths import TranssegError

PLANS_VERSION = 1


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
    foreground_oversampling: float = 0.33
    gradient_clip: float = 1.0                   # max global gradient norm; 0 switches clipping off
    val_every: int = 500                         # steps between validations (and checkpoint_latest.pt)
    save_every: int = 250                        # steps between checkpoint_latest.pt writes
    validation_ema: float = 0.9                  # weight of the old value in the EMA that picks checkpoint_best
    seed: int = 0
    loader_workers: Optional[int] = None         # data-loader processes per GPU; None = the CPUs shared out, at most 8
    gpu_memory_target_gb: float = 24.0
    estimated_memory_gb: float = 0.0             # the memory model's figure for batch_size_per_gpu
    augmentation: AugmentationPlan = field(default_factory=AugmentationPlan)


@dataclass
class Plans:
    dataset_name: str
    data: DataPlan
    model: ModelPlan = field(default_factory=ModelPlan)
    training: TrainingPlan = field(default_factory=TrainingPlan)
    plans_name: str = "plans"
    schema_version: int = PLANS_VERSION
    decisions: list[str] = field(default_factory=list)   # one line per rule applied, for the reader

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict, source: str = "plans") -> "Plans":
        version = d.get("schema_version")
        if version != PLANS_VERSION:
            raise TranssegError(f"{source}: schema_version {version}, this TransSeg reads {PLANS_VERSION}; "
                                f"rerun transseg_plan_experiment.")
        return _build(cls, d, source)

    def content_hash(self) -> str:
        """A short hash of everything preprocessing depends on (the data section)."""
        text = json.dumps(dataclasses.asdict(self.data), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _build(cls: type, d: Any, where: str):
    if not isinstance(d, dict):
        raise TranssegError(f"{where}: expected an object, got {type(d).__name__}.")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise TranssegError(f"{where}: unknown key(s) {unknown}; known keys: {sorted(names)}.")
    values = {}
    for name, value in d.items():
        values[name] = _convert(hints[name], value, f"{where}.{name}")
    try:
        return cls(**values)
    except TypeError as error:
        raise TranssegError(f"{where}: {error}.") from None


def _convert(hint: Any, value: Any, where: str):
    origin = typing.get_origin(hint)
    arguments = typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, where)
    if origin is typing.Union and value is not None:
        inner = [a for a in arguments if a is not type(None)]
        return _convert(inner[0], value, where) if len(inner) == 1 else value
    if origin is list and arguments and isinstance(value, list):
        return [_convert(arguments[0], v, f"{where}[{i}]") for i, v in enumerate(value)]
    return value


def plans_path(preprocessed_dataset_folder: Path, plans_name: str = "plans") -> Path:
    return Path(preprocessed_dataset_folder) / f"{plans_name}.json"


def save_plans(plans: Plans, path: Path) -> None:
    save_json(plans.to_dict(), path)


def load_plans(path: Path) -> Plans:
    return Plans.from_dict(load_json(path), str(path))
