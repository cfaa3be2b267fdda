"""Image I/O through SimpleITK, and the geometry record that lets a prediction be written back exactly.

Arrays are in numpy order: a 3D image is (Z, Y, X) and a multi-channel image (C, Z, Y, X), as
``SimpleITK.GetArrayFromImage`` returns them. Geometry is kept in SimpleITK's (x, y, z) order,
because that is what the file header holds and what writing back needs.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence, Union

import numpy as np
import SimpleITK as sitk

from .files import atomic_path
from .nifti import check_nifti
from .paths import TranssegError

SUPPORTED_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
PathLike = Union[str, Path]


def image_suffix(path: PathLike) -> str:
    """The file ending, ``.nii.gz`` counted as one."""
    name = Path(path).name.lower()
    for suffix in SUPPORTED_SUFFIXES:
        if name.endswith(suffix):
            return suffix
    return Path(path).suffix.lower()


@dataclass(frozen=True)
class Geometry:
    """Where an image's voxels sit in the world, and how they were stored."""

    spacing: tuple[float, float, float]        # x, y, z (mm)
    origin: tuple[float, float, float]         # x, y, z (mm)
    direction: tuple[float, ...]               # row-major 3x3 direction cosines
    size: tuple[int, int, int]                 # x, y, z voxels
    pixel_type: str                            # numpy dtype name of the stored voxels, e.g. 'int16'
    num_channels: int = 1

    @property
    def shape(self) -> tuple[int, int, int]:
        """Array shape (Z, Y, X) of one channel."""
        return tuple(reversed(self.size))

    @property
    def spacing_zyx(self) -> tuple[float, float, float]:
        return tuple(reversed(self.spacing))

    @property
    def orientation(self) -> str:
        """Three-letter code such as 'LPS' or 'RAS' (the direction each array axis x, y, z points to)."""
        return sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(self.direction)

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> "Geometry":
        return cls(
            spacing=tuple(float(v) for v in d["spacing"]),
            origin=tuple(float(v) for v in d["origin"]),
            direction=tuple(float(v) for v in d["direction"]),
            size=tuple(int(v) for v in d["size"]),
            pixel_type=str(d["pixel_type"]),
            num_channels=int(d.get("num_channels", 1)),
        )

    def agrees_with(self, other: "Geometry", tolerance: float = 1e-3) -> list[str]:
        """What differs between two grids beyond ``tolerance`` (relative for spacing, mm for origin)."""
        problems = []
        if self.size != other.size:
            problems.append(f"shape {self.shape} vs {other.shape}")
        if not np.allclose(self.spacing, other.spacing, rtol=tolerance, atol=0):
            problems.append(f"spacing {_fmt(self.spacing)} vs {_fmt(other.spacing)}")
        if not np.allclose(self.origin, other.origin, atol=max(tolerance, 1e-3) * 10):
            problems.append(f"origin {_fmt(self.origin)} vs {_fmt(other.origin)}")
        if not np.allclose(self.direction, other.direction, atol=tolerance):
            problems.append(f"direction {_fmt(self.direction)} vs {_fmt(other.direction)}")
        return problems


def _fmt(values: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"


def geometry_of(image: sitk.Image, num_channels: int, dtype: np.dtype) -> Geometry:
    """The grid of a 3D image, or of a 4D MSD image whose fourth axis holds the channels."""
    dimension = image.GetDimension()
    if dimension == 3:
        spacing, origin, size = image.GetSpacing(), image.GetOrigin(), image.GetSize()
        direction = image.GetDirection()
    elif dimension == 4:  # MSD stores channels as the fourth axis
        spacing, origin, size = image.GetSpacing()[:3], image.GetOrigin()[:3], image.GetSize()[:3]
        d4 = np.array(image.GetDirection()).reshape(4, 4)
        direction = tuple(d4[:3, :3].ravel())
    else:
        raise ValueError(f"{dimension}D images are not supported (3D or 4D expected)")
    return Geometry(
        spacing=tuple(float(v) for v in spacing),
        origin=tuple(float(v) for v in origin),
        direction=tuple(float(v) for v in direction),
        size=tuple(int(v) for v in size),
        pixel_type=np.dtype(dtype).name,
        num_channels=num_channels,
    )


def read_image(path: PathLike, thorough: bool = False) -> tuple[np.ndarray, Geometry]:
    """Read one file as (C, Z, Y, X): 3D -> C=1, 4D -> C = fourth axis, vector pixels -> C = components.

    Refused, naming the file: a NIfTI file cut short (ITK would zero-fill it; see :mod:`transseg.nifti`,
    ``thorough`` also verifies its gzip CRC and stored NaN/Inf), and NaN/Inf voxels in the array read.
    """
    path = Path(path)
    if not path.is_file():
        raise TranssegError(f"{path}: file not found.")
    if image_suffix(path) in (".nii", ".nii.gz"):
        check_nifti(path, thorough)
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as error:
        first_line = str(error).strip().splitlines()[-1] if str(error).strip() else "unreadable"
        raise TranssegError(f"{path}: cannot be read as an image ({first_line}).") from None
    array = sitk.GetArrayFromImage(image)
    try:
        if image.GetNumberOfComponentsPerPixel() > 1:  # (Z, Y, X, C) -> (C, Z, Y, X)
            array = np.moveaxis(array, -1, 0)
        elif image.GetDimension() == 3:
            array = array[None]
        geometry = geometry_of(image, array.shape[0], array.dtype)
    except ValueError as error:
        raise TranssegError(f"{path}: {error}.") from None
    refuse_non_finite(array, path)
    return array, geometry


def refuse_non_finite(array: np.ndarray, path: Path) -> None:
    """NaN/Inf would reach the fingerprint and the stored arrays; one pass over float data finds them."""
    if not np.issubdtype(array.dtype, np.floating):
        return
    bad = array.size - int(np.count_nonzero(np.isfinite(array)))
    if bad:
        nan = int(np.count_nonzero(np.isnan(array)))
        raise TranssegError(f"{path}: {bad} NaN/Inf voxel(s) ({nan} NaN, {bad - nan} Inf). Replace them in the "
                            f"file, for example by 0 or the background value.")


def read_channels(paths: Sequence[PathLike], thorough: bool = False) -> tuple[np.ndarray, Geometry]:
    """Read one or more files and stack their channels; all files must share one grid."""
    arrays, geometries = zip(*(read_image(p, thorough) for p in paths))
    reference = geometries[0]
    for path, geometry in zip(paths[1:], geometries[1:]):
        problems = reference.agrees_with(geometry)
        if problems:
            raise TranssegError(f"{path}: channel grid differs from {paths[0]}: {'; '.join(problems)}.")
    data = np.concatenate(arrays, axis=0) if len(arrays) > 1 else arrays[0]
    return data, Geometry.from_dict({**reference.to_dict(), "num_channels": data.shape[0]})


def read_label(path: PathLike, thorough: bool = False) -> tuple[np.ndarray, Geometry]:
    """Read a label map as (Z, Y, X) integers; a multi-channel file is an error."""
    array, geometry = read_image(path, thorough)
    if array.shape[0] != 1:
        raise TranssegError(f"{path}: a label map must have one channel, this one has {array.shape[0]}.")
    label = array[0]
    if not np.issubdtype(label.dtype, np.integer):
        rounded = np.rint(label)
        if not np.array_equal(rounded, label):
            raise TranssegError(f"{path}: label values must be whole numbers.")
        label = rounded.astype(np.int32)
    return label, geometry


def make_image(array: np.ndarray, geometry: Geometry) -> sitk.Image:
    """A SimpleITK image of a (Z, Y, X) array on ``geometry``'s grid."""
    if array.shape != geometry.shape:
        raise ValueError(f"array shape {array.shape} does not match the geometry's {geometry.shape}")
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(geometry.spacing)
    image.SetOrigin(geometry.origin)
    image.SetDirection(geometry.direction)
    return image


def write_image(array: np.ndarray, geometry: Geometry, path: PathLike, compress: bool = True) -> None:
    """Write a (Z, Y, X) array with ``geometry``; the file appears complete or not at all."""
    with atomic_path(path) as temporary:
        sitk.WriteImage(make_image(array, geometry), str(temporary), useCompression=compress)


AXIS_OF_LETTER = {"L": "LR", "R": "LR", "P": "AP", "A": "AP", "I": "IS", "S": "IS"}


def anatomical_axes(orientation: str) -> list[str]:
    """The anatomical axis ('LR', 'AP', 'IS') each numpy axis (z, y, x) of an image runs along."""
    return [AXIS_OF_LETTER[orientation.upper()[2 - k]] for k in range(3)]


def orientation_permutation(source: str, target: str) -> tuple[tuple[int, ...], tuple[bool, ...]]:
    """How to turn an array in ``source`` orientation into ``target`` orientation (numpy axis order).

    Returns (axes, flips): ``np.transpose(a, axes)`` then flip the axes marked True. Codes are in
    SimpleITK's x, y, z order; the returned permutation is in numpy's z, y, x order.
    """
    pairs = AXIS_OF_LETTER
    source_xyz, target_xyz = source.upper(), target.upper()
    axes_xyz, flips_xyz = [], []
    for letter in target_xyz:
        index = next(i for i, s in enumerate(source_xyz) if pairs[s] == pairs[letter])
        axes_xyz.append(index)
        flips_xyz.append(source_xyz[index] != letter)
    # convert from x,y,z indices to numpy z,y,x indices
    axes = tuple(2 - axes_xyz[2 - k] for k in range(3))
    flips = tuple(flips_xyz[2 - k] for k in range(3))
    return axes, flips
