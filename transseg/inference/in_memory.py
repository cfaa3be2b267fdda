"""Prediction from Python, in memory: load a model once, segment many images without touching the disk.

    from transseg.inference.in_memory import Predictor
    predictor = Predictor.from_model_folder("results/Dataset003_Liver/plans", folds=[0, 1], device="cuda")
    segmentation = predictor.predict_image(sitk.ReadImage("liver_1.nii.gz"))     # same grid as the input
    labels = predictor.predict_array(array, spacing=(0.8, 0.8, 2.5))              # numpy in, numpy out

It is the path ``transseg_predict`` takes, not a copy of it: the command is a loop over
:meth:`Predictor.predict_preprocessed` with file reading before and :func:`case.export_case` after,
and both end in :func:`case.final_labels`. Only how the image arrives differs (a file there, an
array or SimpleITK image here), and both read it into the same (C, Z, Y, X) array and geometry.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import SimpleITK as sitk
import torch

from ..devices import resolve_device
from ..io import Geometry, geometry_of, make_image, refuse_non_finite
from ..paths import TranssegError
from ..postprocessing import PostprocessingRules, load_postprocessing
from ..preprocessing import preprocess_arrays
from .batch import default_batch_size
from .case import CasePrediction, final_labels, predict_case
from .precision import channels_last_decoder, set_cpu_threads
from .trained_model import TrainedModel, load_trained_model
from .volume import InferenceSettings, VolumeModel

IDENTITY_DIRECTION = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
ImageInput = Union[sitk.Image, Sequence[sitk.Image]]


def image_arrays(image: ImageInput, name: str = "image") -> tuple[np.ndarray, Geometry]:
    """(C, Z, Y, X) and the geometry of a SimpleITK image (3D, 4D or vector pixels: channels) or of a list of
    single-channel images on one grid (one per channel), exactly as reading their files would give them."""
    images = [image] if isinstance(image, sitk.Image) else list(image)
    if not images or not all(isinstance(i, sitk.Image) for i in images):
        raise TranssegError(f"{name}: expected a SimpleITK image or a list of them (one per channel).")
    arrays, geometries = [], []
    for index, item in enumerate(images):
        array = sitk.GetArrayFromImage(item)
        if item.GetNumberOfComponentsPerPixel() > 1:
            array = np.moveaxis(array, -1, 0)
        elif item.GetDimension() == 3:
            array = array[None]
        try:
            geometries.append(geometry_of(item, array.shape[0], array.dtype))
        except ValueError as error:
            raise TranssegError(f"{name} (channel image {index}): {error}.") from None
        if index and geometries[0].agrees_with(geometries[-1]):
            raise TranssegError(f"{name}: channel image {index}'s grid differs from channel image 0's: "
                                f"{'; '.join(geometries[0].agrees_with(geometries[-1]))}.")
        arrays.append(array)
    data = np.concatenate(arrays, axis=0) if len(arrays) > 1 else arrays[0]
    return data, Geometry.from_dict({**geometries[0].to_dict(), "num_channels": data.shape[0]})


@dataclass
class Predictor:
    """A trained model's chosen folds on a device, with the inference settings; reusable for any number of images."""

    model: TrainedModel
    device: torch.device
    settings: InferenceSettings
    postprocessing: Optional[PostprocessingRules] = None    # applied to every final label map (case.final_labels)

    @classmethod
    def from_model_folder(cls, folder: Union[str, Path], folds: Optional[Sequence[Union[int, str]]] = None,
                          checkpoint: str = "final", device: Union[str, torch.device] = "auto",
                          precision: str = "auto", tta: bool = False,
                          batch_size: Optional[int] = None, postprocessing: bool = True,
                          **options) -> "Predictor":
        """Load ``folds`` (default: every trained fold) of a model folder or an exported model zip.

        ``device``: 'auto' (CUDA when available), 'cuda', 'cpu' or a torch.device; ``precision``:
        'auto' (bf16 on a GPU and on CPUs with native bf16), 'fp32' or 'bf16'; ``tta``: average over
        mirrorings (in-plane; with ``tta_slice_flip=True`` also the window reversed); ``batch_size``:
        windows per forward pass (default: from the memory model on a GPU, 4 on a CPU);
        ``options``: other ``InferenceSettings`` fields (``tile_weighting='uniform'``, ``tile_step``);
        ``postprocessing``: apply the folder's postprocessing.json when it has one (False: raw predictions).
        """
        device = resolve_device(device) if isinstance(device, str) else torch.device(device)
        from ..model_export import opened_model    # a zip is unpacked (and verified) into a temporary folder
        with opened_model(Path(folder)) as model_folder:
            model = load_trained_model(model_folder, [str(f) for f in folds] if folds else None, checkpoint, device)
            rules = load_postprocessing(model_folder) if postprocessing else None
        return cls.from_trained_model(model, device, tta=tta, precision=precision, batch_size=batch_size,
                                      postprocessing=rules, **options)

    @classmethod
    def from_trained_model(cls, model: TrainedModel, device: torch.device, tta: bool = False,
                           precision: str = "auto", batch_size: Optional[int] = None,
                           postprocessing: Optional[PostprocessingRules] = None, compile: bool = False,
                           **options) -> "Predictor":
        """``compile``: torch.compile each fold's network (minutes of warm-up; documentation/inference.md, CPU only)."""
        batch = batch_size or default_batch_size(model.plans, device)
        settings = replace(InferenceSettings.on(device, batch, tta, precision), **options)
        if device.type == "cpu":          # channels-last decoders: faster in bf16 there, slower in fp32 (precision)
            set_cpu_threads()
            for fold in model.folds:
                channels_last_decoder(fold.model.network, settings.autocast == torch.bfloat16)
        if compile:
            for fold in model.folds:
                fold.model = replace(fold.model, network=torch.compile(fold.model.network))
        return cls(model, device, settings, postprocessing)

    @property
    def models(self) -> list[VolumeModel]:
        return [fold.model for fold in self.model.folds]

    @property
    def num_channels(self) -> int:
        return self.model.num_channels

    def predict_preprocessed(self, data: np.ndarray, properties: dict, keep_probabilities: bool = False,
                             progress=None) -> CasePrediction:
        """A preprocessed case (``preprocess_arrays``/``preprocess_case`` output) through every fold."""
        prediction = predict_case(self.models, data, properties, self.device, self.settings, keep_probabilities,
                                  progress)
        prediction.postprocessing = self.postprocessing
        return prediction

    def predict_arrays(self, data: np.ndarray, geometry: Geometry, name: str = "image") -> np.ndarray:
        """Label values (Z, Y, X) on the grid of ``data`` (C, Z, Y, X, as stored in the file) and ``geometry``."""
        refuse_non_finite(data, name)
        preprocessed, _, properties = preprocess_arrays(data, None, geometry, self.model.plans.data,
                                                        image_source=name)
        return final_labels(self.predict_preprocessed(preprocessed, properties))

    def predict_image(self, image: ImageInput) -> sitk.Image:
        """The segmentation of a SimpleITK image (or a list, one image per channel), with the input's geometry."""
        data, geometry = image_arrays(image)
        return make_image(self.predict_arrays(data, geometry), geometry)

    def predict_array(self, array: np.ndarray, spacing: Sequence[float],
                      origin: Sequence[float] = (0.0, 0.0, 0.0),
                      direction: Sequence[float] = IDENTITY_DIRECTION) -> np.ndarray:
        """Label values for a numpy image: (Z, Y, X), or (C, Z, Y, X) for several channels, in the order
        ``sitk.GetArrayFromImage`` gives; ``spacing`` and ``origin`` in SimpleITK's (x, y, z) order and
        ``direction`` its 9 row-major cosines (what ``image.GetSpacing()`` etc. return)."""
        array = np.asarray(array)
        if array.ndim not in (3, 4):
            raise TranssegError(f"image array: expected (Z, Y, X) or (C, Z, Y, X), got shape {array.shape}.")
        data = array[None] if array.ndim == 3 else array
        if len(spacing) != 3 or len(origin) != 3 or len(direction) != 9:
            raise TranssegError("image array: spacing and origin need 3 values (x, y, z), direction 9.")
        geometry = Geometry(spacing=tuple(float(v) for v in spacing), origin=tuple(float(v) for v in origin),
                            direction=tuple(float(v) for v in direction), size=tuple(reversed(data.shape[1:])),
                            pixel_type=data.dtype.name, num_channels=data.shape[0])
        return self.predict_arrays(data, geometry)
