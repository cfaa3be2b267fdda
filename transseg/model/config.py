"""ModelConfig: everything needed to rebuild the network, as plain JSON-friendly data.

It is the ``model`` section of plans.json, so it must round-trip through JSON exactly and reject
keys it does not know (a typo in a hand-edited plan should fail loudly, not be ignored).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from .inflation import DEPTH_INFLATIONS

PREDICT_MODES = ("center", "all")


@dataclass
class ModelConfig:
    """The network: backbone, pre-trained source, input window and decoder.

    backbone: timm model name (a pretrained tag such as ``.in22k_ft_in22k`` is allowed).
    pretrained: "timm" (timm's weights for ``backbone``), "timm:<name>" (timm's weights of another
        name), or None (random init, the paper's "w/o T"; wins over ``pretrained_file``).
    pretrained_file: local .pth/.bin/.safetensors used instead of downloading (offline machines).
    in_channels: C, image channels (MRI sequences); slices: K, the window (1 = the 2D model).
    image_size: in-plane (H, W), each a multiple of the backbone's patch size.
    inflation: how the 2D patch kernel is spread over K slices: center | average | none.
    decoder_channels: UPerNet width (768 for Base backbones, narrower for tiny ones).
    predict: "center" (logits of the centre slice) or "all" (logits of all K slices).
    out_indices: the 4 encoder blocks (plain ViTs) or stages (Swin) fed to the decoder;
        None = (3, 5, 7, 11) for 12 blocks, evenly spread for other depths, all 4 Swin stages.
    backbone_kwargs: extra keyword arguments for timm.create_model (e.g. a tiny embed_dim/depth).
    """

    backbone: str = "beit_base_patch16_224.in22k_ft_in22k"
    pretrained: Optional[str] = "timm"
    pretrained_file: Optional[str] = None
    in_channels: int = 1
    num_classes: int = 2
    image_size: Tuple[int, int] = (512, 512)
    slices: int = 5
    inflation: str = "center"
    decoder_channels: int = 768
    predict: str = "center"
    out_indices: Optional[List[int]] = None
    drop_path_rate: float = 0.1
    decoder_dropout: float = 0.1
    backbone_kwargs: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        size = self.image_size
        if isinstance(size, int):
            size = (size, size)
        self.image_size = tuple(int(s) for s in size)
        if self.out_indices is not None:
            self.out_indices = [int(i) for i in self.out_indices]
        self.backbone_kwargs = dict(self.backbone_kwargs or {})
        self._validate()

    def _validate(self) -> None:
        """Fail at config time, naming the field, rather than deep inside model construction."""
        problems = []
        if len(self.image_size) != 2 or min(self.image_size) < 1:
            problems.append(f"image_size must be two positive ints (H, W), got {self.image_size}")
        if self.slices < 1 or self.slices % 2 == 0:
            problems.append(f"slices must be a positive odd number (a window needs a centre slice), got {self.slices}")
        if self.in_channels < 1:
            problems.append(f"in_channels must be >= 1, got {self.in_channels}")
        if self.num_classes < 1:
            problems.append(f"num_classes must be >= 1, got {self.num_classes}")
        if self.decoder_channels < 1:
            problems.append(f"decoder_channels must be >= 1, got {self.decoder_channels}")
        if self.inflation not in DEPTH_INFLATIONS:
            problems.append(f"inflation must be one of {sorted(DEPTH_INFLATIONS)}, got {self.inflation!r}")
        if self.predict not in PREDICT_MODES:
            problems.append(f"predict must be one of {list(PREDICT_MODES)}, got {self.predict!r}")
        if self.pretrained is not None and not (self.pretrained == "timm" or self.pretrained.startswith("timm:")):
            problems.append(f"pretrained must be 'timm', 'timm:<model name>' or null, got {self.pretrained!r}")
        if self.out_indices is not None and len(self.out_indices) != 4:
            problems.append(f"out_indices must list 4 blocks/stages, got {self.out_indices}")
        if problems:
            raise ValueError("invalid ModelConfig: " + "; ".join(problems))

    @property
    def timm_weights_name(self) -> str:
        """The timm name whose weights ``pretrained`` asks for."""
        if self.pretrained and self.pretrained.startswith("timm:"):
            return self.pretrained[len("timm:"):]
        return self.backbone

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready dict (tuples become lists)."""
        d = dataclasses.asdict(self)
        d["image_size"] = list(self.image_size)
        return d

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "ModelConfig":
        """Inverse of to_dict; unknown keys are an error so typos in plans.json surface."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown ModelConfig key(s) {unknown}; known keys: {sorted(known)}")
        return cls(**d)
