"""A run's settings: plans.json plus this run's overrides; and the ModelConfig built from them.

Every hyper-parameter lives in plans.json; a run may change any of them with
``--set SECTION.FIELD=VALUE`` (VALUE read as JSON, else as a string), and the common ones have
their own flags (``--steps``, ``--lr``, ...), which are the same overrides. The result is checked
by ``Plans.from_dict`` like a hand-edited file, so nothing ever needs a subclass. Fields of the
``data`` section that preprocessing used cannot be overridden: the stored cases were made with them.
"""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Any, Optional, Union

from ..model import ModelConfig
from ..paths import TranssegError
from ..planning.plans import Plans

# data fields the network reads but preprocessing does not: safe to change per run
RUN_DATA_FIELDS = ("window_slices", "window_stride", "predict", "resolution", "label_names")


@dataclass
class TrainOptions:
    """What ``transseg_train`` was asked for (the CLI flags, as plain data)."""

    dataset: str
    fold: Union[int, str]
    plans_name: str = "plans"
    device: str = "auto"
    steps: Optional[int] = None
    batch_size: Optional[int] = None                  # global batch
    learning_rate: Optional[float] = None
    val_every: Optional[int] = None
    save_every: Optional[int] = None
    seed: Optional[int] = None
    pretrained_file: Optional[str] = None
    no_pretrained: bool = False
    resume: bool = False
    overwrite: bool = False
    overrides: list[str] = field(default_factory=list)  # SECTION.FIELD=VALUE
    final_validation: bool = True
    validation_only: bool = False                     # --val: predict and score the validation cases, no training
    checkpoint: str = "final"                         # -chk: which checkpoint --val uses (final or best)
    save_probabilities: bool = False                  # --npz: keep each validation case's probabilities
    raw_root: Optional[str] = None
    preprocessed_root: Optional[str] = None
    results_root: Optional[str] = None

    def all_overrides(self) -> list[str]:
        """The dedicated flags as ``--set`` overrides, then the explicit ones (which win)."""
        flags = {"training.steps": self.steps, "training.global_batch_size": self.batch_size,
                 "training.learning_rate": self.learning_rate, "training.val_every": self.val_every,
                 "training.save_every": self.save_every, "training.seed": self.seed}
        result = [f"{key}={json.dumps(value)}" for key, value in flags.items() if value is not None]
        if self.pretrained_file is not None:
            result += [f"model.pretrained_file={json.dumps(self.pretrained_file)}"]
        if self.no_pretrained:
            result += ["model.pretrained=null"]
        return result + list(self.overrides)


def parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise TranssegError(f"--set {text}: expected SECTION.FIELD=VALUE, e.g. training.learning_rate=1e-4.")
    key, raw = text.split("=", 1)
    path = [part for part in key.strip().split(".") if part]
    if len(path) < 2:
        raise TranssegError(f"--set {text}: name a section and a field, e.g. training.steps=1000.")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return path, value


def apply_overrides(plans: Plans, overrides: list[str], source: str = "plans") -> tuple[Plans, list[str]]:
    """The plans with each override applied and validated; also the overrides in words for the log."""
    tree = copy.deepcopy(plans.to_dict())
    applied, keys = [], set()
    for text in overrides:
        path, value = parse_override(text)
        if path[0] == "data" and path[1] not in RUN_DATA_FIELDS:
            raise TranssegError(f"--set {text}: data.{path[1]} was used by preprocessing and cannot change for "
                                f"one run; edit plans.json and rerun transseg_preprocess instead "
                                f"(per run: {', '.join('data.' + f for f in RUN_DATA_FIELDS)}).")
        node = tree
        for depth, part in enumerate(path[:-1]):
            if not isinstance(node.get(part), dict):
                raise TranssegError(f"--set {text}: '{'.'.join(path[:depth + 1])}' is not a section of the plans.")
            node = node[part]
        if path[-1] not in node:
            raise TranssegError(f"--set {text}: no field '{path[-1]}' in '{'.'.join(path[:-1])}'; "
                                f"its fields: {sorted(node)}.")
        node[path[-1]] = value
        keys.add(".".join(path))
        applied.append(f"{'.'.join(path)} = {json.dumps(value)}")
    if "model.pretrained_file" in keys and "model.pretrained" not in keys and tree["model"]["pretrained"] is None:
        tree["model"]["pretrained"] = "timm"      # a weights file means: start from pre-trained weights
    return Plans.from_dict(tree, f"{source} with --set overrides"), applied


def model_config_from_plans(plans: Plans) -> ModelConfig:
    """The network the plans describe: window and classes from ``data``, the rest from ``model``."""
    data, model = plans.data, plans.model
    try:
        return ModelConfig(backbone=model.backbone, pretrained=model.pretrained, pretrained_file=model.pretrained_file,
                           in_channels=len(data.normalization), num_classes=len(data.label_values),
                           image_size=tuple(data.resolution), slices=data.window_slices, inflation=model.inflation,
                           decoder_channels=model.decoder_channels, predict=data.predict,
                           drop_path_rate=model.drop_path_rate, decoder_dropout=model.decoder_dropout)
    except (TypeError, ValueError) as error:
        raise TranssegError(f"plans: {error}") from None


@dataclass(frozen=True)
class BatchPlan:
    global_batch: int
    per_gpu_batch: int
    accumulation: int


def batch_plan(global_batch: int, planned_per_gpu: int, world_size: int, batch_norm: bool = True) -> BatchPlan:
    """Windows per GPU step and accumulation so that world_size x per-GPU x accumulation = global.

    With ``batch_norm`` (UPerNet's, synchronised over the ranks) a micro-batch must hold at least
    two windows over all ranks: the pyramid pooling's 1 x 1 branch normalises one value per window,
    and one value has no variance. Such a layout is refused here, before anything starts.
    """
    if global_batch % world_size:
        raise TranssegError(f"the global batch {global_batch} is not divisible by the {world_size} processes; "
                            f"choose --batch_size as a multiple of {world_size}.")
    per_rank = global_batch // world_size
    per_gpu = max(d for d in range(1, min(planned_per_gpu, per_rank) + 1) if per_rank % d == 0)
    if batch_norm and per_gpu * world_size < 2:
        raise TranssegError(
            f"training.global_batch_size {global_batch} on {world_size} process(es) with training.batch_size_per_gpu "
            f"{planned_per_gpu} gives micro-batches of 1 window, accumulated {per_rank} times, but UPerNet's batch "
            f"norm needs at least 2 windows per micro-batch. Set training.batch_size_per_gpu to 2 or more and "
            f"--batch_size to a multiple of {2 * world_size}.")
    return BatchPlan(global_batch, per_gpu, per_rank // per_gpu)
