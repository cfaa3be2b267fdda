"""What the network sees: K slices ``stride`` apart around a centre, at (H, W), padded with -1."""
from __future__ import annotations

from dataclasses import dataclass

from ..planning.plans import DataPlan

PAD_VALUE = -1.0     # the bottom of the normalised range: air in CT, the zero background of MR


@dataclass(frozen=True)
class WindowSpec:
    slices: int                      # K
    stride: int                      # slice distance inside a window
    resolution: tuple[int, int]      # (H, W)
    predict: str = "center"          # 'center': the centre slice is the target; 'all': all K slices

    @property
    def label_slices(self) -> int:
        return self.slices if self.predict == "all" else 1

    def to_dict(self) -> dict:
        return {"slices": self.slices, "stride": self.stride, "resolution": list(self.resolution),
                "predict": self.predict}

    @classmethod
    def from_dict(cls, d: dict) -> "WindowSpec":
        return cls(int(d["slices"]), int(d["stride"]), tuple(int(r) for r in d["resolution"]), str(d["predict"]))

    @classmethod
    def from_plan(cls, data: DataPlan) -> "WindowSpec":
        return cls(data.window_slices, data.window_stride, tuple(data.resolution), data.predict)
