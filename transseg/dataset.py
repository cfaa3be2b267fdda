"""Reading a raw dataset folder: the Medical Segmentation Decathlon layout natively, nnU-Net v2 too.

MSD: ``dataset.json`` with ``modality`` ({"0": "CT"}), ``labels`` (value -> name), ``training``
(image/label pairs) and ``test``; a multi-channel image is one 4D file. nnU-Net v2:
``channel_names``, ``labels`` (name -> value), ``file_ending``, one ``CASE_XXXX`` file per channel.
Both become one :class:`DatasetSpec`. Files whose names start with ``._`` (macOS metadata shipped
inside the MSD tarballs) are ignored wherever folders are listed.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from .files import load_json
from .io import SUPPORTED_SUFFIXES, Geometry, image_suffix, read_channels, read_label
from .paths import TranssegError


@dataclass(frozen=True)
class CaseFiles:
    """The files of one case: MSD has one (possibly 4D) image file, nnU-Net one file per channel."""

    identifier: str
    images: tuple[Path, ...]
    label: Optional[Path] = None


@dataclass
class DatasetSpec:
    name: str
    folder: Path
    layout: str                                   # 'msd' or 'nnunet'
    channel_names: list[str]
    labels: dict[int, str]                        # label value -> name, ascending, 0 first
    file_ending: str
    training: list[CaseFiles] = field(default_factory=list)
    test: list[CaseFiles] = field(default_factory=list)

    @property
    def num_channels(self) -> int:
        return len(self.channel_names)

    @property
    def label_values(self) -> list[int]:
        return sorted(self.labels)

    def is_ct(self, channel: int) -> bool:
        """Only a channel named "CT" is CT; every other name is treated as MR-like."""
        return self.channel_names[channel].strip().upper() == "CT"

    def case(self, identifier: str) -> CaseFiles:
        for case in self.training + self.test:
            if case.identifier == identifier:
                return case
        raise TranssegError(f"{self.folder}: no case '{identifier}'.")


def is_hidden_junk(path: Path) -> bool:
    return path.name.startswith("._") or path.name.startswith(".")


def strip_suffix(name: str) -> str:
    suffix = image_suffix(name)
    return name[: -len(suffix)] if suffix and name.lower().endswith(suffix) else name


def _int_key(value, source: Path, what: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise TranssegError(f"{source}: {what} '{value}' is not an integer.") from None


def _ordered(mapping: dict, source: Path, what: str) -> list:
    return [mapping[k] for k in sorted(mapping, key=lambda k: _int_key(k, source, what))]


def _section(meta: dict, key: str, kind: type, json_path: Path, example: str):
    """``meta[key]`` if it has the JSON type ``kind``, else an error that shows the expected form."""
    value = meta.get(key)
    if not isinstance(value, kind):
        raise TranssegError(f"{json_path}: '{key}' must be {example}, got {json.dumps(value)}.")
    return value


def _resolve(folder: Path, name: str, json_path: Path) -> Path:
    """A file that dataset.json names: it must lie inside the dataset folder (no absolute path, no '..' out)."""
    root = Path(os.path.normpath(Path(folder).absolute()))
    candidate = Path(os.path.normpath(root / name))
    if Path(name).is_absolute() or not candidate.is_relative_to(root):
        raise TranssegError(f"{json_path}: '{name}' points outside the dataset folder {root}; dataset.json may only "
                            f"name files inside it.")
    return candidate


def _msd_cases(folder: Path, entries: list, json_path: Path, section: str) -> list[CaseFiles]:
    """Cases of the 'training' (image and label) or 'test' (image) list of an MSD dataset.json."""
    with_labels = section == "training"
    cases = []
    for index, entry in enumerate(entries):
        image = entry.get("image") if isinstance(entry, dict) else entry
        if not isinstance(image, str) or not image:
            raise TranssegError(f"{json_path}: {section} entry {index} ({json.dumps(entry)}) has no 'image' file name.")
        image_path = _resolve(folder, image, json_path)
        if is_hidden_junk(image_path):
            continue
        label_path = None
        if with_labels:
            label = entry.get("label") if isinstance(entry, dict) else None
            if not isinstance(label, str) or not label:
                raise TranssegError(f"{json_path}: {section} entry {index} ({image}) has no 'label' file name.")
            label_path = _resolve(folder, label, json_path)
        cases.append(CaseFiles(strip_suffix(image_path.name), (image_path,), label_path))
    return cases


def _scan_msd_folder(images_folder: Path, labels_folder: Optional[Path]) -> list[CaseFiles]:
    """Cases found by listing a folder, used when dataset.json does not list them."""
    if not images_folder.is_dir():
        return []
    cases = []
    for path in sorted(images_folder.iterdir()):
        if is_hidden_junk(path) or not path.is_file() or not image_suffix(path):
            continue
        label = labels_folder / path.name if labels_folder is not None else None
        cases.append(CaseFiles(strip_suffix(path.name), (path,), label))
    return cases


def _load_msd(folder: Path, meta: dict, json_path: Path) -> DatasetSpec:
    channel_names = [str(v) for v in _ordered(_section(meta, "modality", dict, json_path, '{"0": "CT"}'),
                                              json_path, "modality key")]
    labels = {_int_key(k, json_path, "label value"): str(v)
              for k, v in _section(meta, "labels", dict, json_path, '{"0": "background", "1": "..."}').items()}
    cases = {}
    for section, images, label_folder in (("training", "imagesTr", "labelsTr"), ("test", "imagesTs", None)):
        if section in meta:
            entries = _section(meta, section, list, json_path, "a list of cases")
            cases[section] = _msd_cases(folder, entries, json_path, section)
        else:
            cases[section] = _scan_msd_folder(folder / images, folder / label_folder if label_folder else None)
    training, test = cases["training"], cases["test"]
    ending = image_suffix(training[0].images[0]) if training else ".nii.gz"
    return DatasetSpec(str(meta.get("name", folder.name)), folder, "msd", channel_names, labels, ending,
                       training, test)


def _group_channel_files(images_folder: Path, ending: str, num_channels: int,
                         labels_folder: Optional[Path]) -> list[CaseFiles]:
    if not images_folder.is_dir():
        return []
    pattern = re.compile(r"^(.+)_(\d{4})" + re.escape(ending) + "$")
    grouped: dict[str, dict[int, Path]] = {}
    for path in sorted(images_folder.iterdir()):
        match = pattern.match(path.name)
        if is_hidden_junk(path) or match is None:
            continue
        grouped.setdefault(match.group(1), {})[int(match.group(2))] = path
    cases = []
    for identifier, channels in sorted(grouped.items()):
        images = tuple(channels.get(c, images_folder / f"{identifier}_{c:04d}{ending}") for c in range(num_channels))
        label = labels_folder / f"{identifier}{ending}" if labels_folder is not None else None
        cases.append(CaseFiles(identifier, images, label))
    return cases


def _load_nnunet(folder: Path, meta: dict, json_path: Path) -> DatasetSpec:
    channel_names = [str(v) for v in _ordered(_section(meta, "channel_names", dict, json_path, '{"0": "CT"}'),
                                              json_path, "channel_names key")]
    labels = {}
    for name, value in _section(meta, "labels", dict, json_path, '{"background": 0, "...": 1}').items():
        if isinstance(value, (list, tuple)):
            raise TranssegError(f"{json_path}: label '{name}' is a region {value}; regions are not supported.")
        labels[_int_key(value, json_path, f"value of label '{name}'")] = str(name)
    ending = meta.get("file_ending", ".nii.gz")
    if ending not in SUPPORTED_SUFFIXES:
        raise TranssegError(f"{json_path}: 'file_ending' {json.dumps(ending)} is not one of "
                            f"{list(SUPPORTED_SUFFIXES)}.")
    training = _group_channel_files(folder / "imagesTr", ending, len(channel_names), folder / "labelsTr")
    test = _group_channel_files(folder / "imagesTs", ending, len(channel_names), None)
    return DatasetSpec(str(meta.get("name", folder.name)), folder, "nnunet", channel_names, labels, ending,
                       training, test)


def load_dataset(folder: Path) -> DatasetSpec:
    """Read ``folder/dataset.json`` in either layout and list the cases."""
    folder = Path(folder)
    json_path = folder / "dataset.json"
    meta = load_json(json_path)
    if not isinstance(meta, dict):
        raise TranssegError(f"{json_path}: expected a JSON object.")
    if "channel_names" in meta:
        spec = _load_nnunet(folder, meta, json_path)
    elif "modality" in meta:
        spec = _load_msd(folder, meta, json_path)
    else:
        raise TranssegError(f"{json_path}: neither 'modality' (MSD) nor 'channel_names' (nnU-Net v2) is given.")
    if 0 not in spec.labels:
        raise TranssegError(f"{json_path}: label 0 (background) must be declared.")
    if len(spec.labels) < 2:
        raise TranssegError(f"{json_path}: at least one foreground label must be declared.")
    return spec


def require_training_cases(spec: DatasetSpec) -> list[CaseFiles]:
    """The training cases; a dataset without any is an error (nothing to measure, plan or train)."""
    if not spec.training:
        raise TranssegError(f"{spec.folder / 'dataset.json'}: no training cases (the 'training' list is empty "
                            f"or, without one, imagesTr/ holds no images).")
    return spec.training


def read_case(case: CaseFiles) -> tuple[np.ndarray, Optional[np.ndarray], Geometry]:
    """Image (C, Z, Y, X) as stored, label (Z, Y, X) or None, and the image geometry."""
    data, geometry = read_channels(case.images)
    seg = None
    if case.label is not None:
        seg, label_geometry = read_label(case.label)
        problems = geometry.agrees_with(label_geometry)
        if problems:
            raise TranssegError(f"{case.label}: label grid differs from its image: {'; '.join(problems)}.")
    return data, seg, geometry
