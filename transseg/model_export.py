"""Models that travel: one zip holding everything prediction needs, checked member by member on arrival.

The zip holds ``plans.json``, ``dataset.json`` (and ``postprocessing.json`` when the folder has one),
the chosen folds' checkpoints as ``fold_N/checkpoint_X.pt``, and ``manifest.json``: the format, the
TransSeg version that wrote it, the dataset and plans names, the checkpoint kind, the folds, and the
size and sha256 of every other member. Paths inside the zip are relative to the model folder.

Reading it (install, or ``transseg_predict -m model.zip``) trusts nothing: every member path must stay
inside the target folder, every member must be listed in the manifest with its size and hash and
match them, and every checkpoint must load with ``torch.load(weights_only=True)`` and belong to the
zip's plans. Each refusal names the member. Members are unpacked into a temporary folder that is
renamed into place only when all of them passed, so a refused or interrupted install leaves nothing.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import zipfile
from pathlib import Path, PurePosixPath
from typing import Iterator, Optional, Sequence, Union

from . import __version__
from .checkpoint import check_belongs, checkpoint_file, chosen_folds, load_checkpoint
from .files import atomic_path, temporary_sibling
from .paths import TranssegError
from .planning.plans import load_plans

logger = logging.getLogger(__name__)
PathLike = Union[str, Path]
MANIFEST = "manifest.json"
EXPORT_FORMAT = "transseg-model"
EXPORT_VERSION = 1
REQUIRED_FILES = ("plans.json", "dataset.json")
OPTIONAL_FILES = ("postprocessing.json",)       # exported when the model folder has them
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")   # dataset and plans names: one harmless path component
_CHUNK = 1 << 20


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_checkpoint(path: Path, shown: str, plans) -> None:
    """Loads with weights_only=True and belongs to ``plans``; refused naming ``shown``."""
    try:
        state = load_checkpoint(path, mapped=True)     # the tensors' bytes are checked by sha256, not here
        check_belongs(state, path, plans.dataset_name, plans.plans_name, plans.content_hash())
    except TranssegError as error:
        reason = str(error).removeprefix(f"{path}: ")
        raise TranssegError(f"{shown} refused: not a loadable TransSeg checkpoint of these plans with "
                            f"torch.load(weights_only=True): {reason}") from None


# --------------------------------------------------------------------------------------------- export
def export_model(folder: PathLike, output: PathLike, folds: Optional[Sequence[Union[int, str]]] = None,
                 checkpoint: str = "final") -> Path:
    """Write ``output`` (a zip) with the model folder's plans, dataset.json and the chosen folds' checkpoints."""
    folder, output = Path(folder), Path(output)
    if not (folder / "plans.json").is_file():
        raise TranssegError(f"{folder}: not a trained model folder (no plans.json).")
    checkpoint_file(folder, checkpoint)                                 # refuses an unknown kind
    plans = load_plans(folder / "plans.json")
    chosen = chosen_folds(folder, folds, checkpoint)
    members = {}
    for name in REQUIRED_FILES + OPTIONAL_FILES:
        if (folder / name).is_file():
            members[name] = folder / name
        elif name in REQUIRED_FILES:
            raise TranssegError(f"{folder}: {name} is missing; it is part of every exported model.")
    for fold in chosen:
        path = checkpoint_file(folder / f"fold_{fold}", checkpoint)
        _check_checkpoint(path, str(path), plans)
        members[f"fold_{fold}/{path.name}"] = path
    manifest = {"format": EXPORT_FORMAT, "version": EXPORT_VERSION, "transseg_version": __version__,
                "dataset_name": plans.dataset_name, "plans_name": plans.plans_name, "checkpoint": checkpoint,
                "folds": chosen,
                "members": {name: {"bytes": path.stat().st_size, "sha256": _sha256(path)}
                            for name, path in members.items()}}
    with atomic_path(output) as temporary:
        with zipfile.ZipFile(temporary, "w") as archive:
            archive.writestr(MANIFEST, json.dumps(manifest, indent=2) + "\n", zipfile.ZIP_DEFLATED)
            for name, path in members.items():
                archive.write(path, name, zipfile.ZIP_STORED if name.endswith(".pt") else zipfile.ZIP_DEFLATED)
    logger.info("Exported %s (fold(s) %s, checkpoint_%s) -> %s", folder, ", ".join(chosen), checkpoint, output)
    return output


# --------------------------------------------------------------------------------------------- reading
def _safe_member(name: str, source: Path) -> str:
    """``name`` if it stays inside the folder it is unpacked into, else a refusal naming it."""
    path = PurePosixPath(name)
    if (not name or "\\" in name or name.startswith("/") or path.is_absolute() or ".." in path.parts
            or re.match(r"^[A-Za-z]:", name) or any(part in ("", ".") for part in name.split("/"))):
        raise TranssegError(f"{source}: member '{name}' refused: its path leaves the model folder (absolute, "
                            f"'..' or otherwise unsafe); nothing was installed.")
    return name


def read_manifest(source: PathLike) -> dict:
    """The checked manifest of an exported model zip."""
    source = Path(source)
    if not zipfile.is_zipfile(source):
        raise TranssegError(f"{source}: not a zip file (an exported model is one: transseg_export_model).")
    with zipfile.ZipFile(source) as archive:
        for name in archive.namelist():
            _safe_member(name, source)
        try:
            manifest = json.loads(archive.read(MANIFEST).decode("utf-8"))
        except KeyError:
            raise TranssegError(f"{source}: member '{MANIFEST}' is missing; not an exported TransSeg model.") from None
        except ValueError as error:
            raise TranssegError(f"{source}: member '{MANIFEST}' is not valid JSON ({error}).") from None
    if not isinstance(manifest, dict) or manifest.get("format") != EXPORT_FORMAT:
        raise TranssegError(f"{source}: member '{MANIFEST}' does not describe a TransSeg model.")
    if manifest.get("version") != EXPORT_VERSION:
        raise TranssegError(f"{source}: model format version {manifest.get('version')}, this TransSeg reads "
                            f"{EXPORT_VERSION}.")
    for key in ("dataset_name", "plans_name"):
        if not isinstance(manifest.get(key), str) or not _NAME.match(manifest[key]):
            raise TranssegError(f"{source}: member '{MANIFEST}': {key} {manifest.get(key)!r} is not a plain name.")
    members = manifest.get("members")
    if not isinstance(members, dict) or not all(
            isinstance(v, dict) and isinstance(v.get("sha256"), str) and isinstance(v.get("bytes"), int)
            for v in members.values()):
        raise TranssegError(f"{source}: member '{MANIFEST}': 'members' must map each file to its bytes and sha256.")
    for name in members:
        _safe_member(name, source)
    return manifest


def unpack_model(source: PathLike, target: PathLike) -> dict:
    """Verify ``source`` and unpack it into ``target`` (a new, empty folder); returns the manifest.

    Any refusal raises with the member's name; ``target`` may then hold some members: callers unpack
    into a temporary folder and remove it (see :func:`install_model`, :func:`opened_model`).
    """
    source, target = Path(source), Path(target)
    manifest = read_manifest(source)
    members = manifest["members"]
    with zipfile.ZipFile(source) as archive:
        names = set(archive.namelist()) - {MANIFEST}
        for name in sorted(names - set(members)):
            raise TranssegError(f"{source}: member '{name}' refused: it is not listed in the manifest.")
        for name in sorted(set(members) - names):
            raise TranssegError(f"{source}: member '{name}' is listed in the manifest but missing from the zip.")
        for name in REQUIRED_FILES:
            if name not in members:
                raise TranssegError(f"{source}: member '{name}' is missing; every exported model has one.")
        for name, expected in sorted(members.items()):
            if archive.getinfo(name).file_size != expected["bytes"]:
                raise TranssegError(f"{source}: member '{name}' refused: {archive.getinfo(name).file_size} bytes, "
                                    f"the manifest says {expected['bytes']}.")
            destination = target.joinpath(*PurePosixPath(name).parts)
            destination.parent.mkdir(parents=True, exist_ok=True)
            digest = hashlib.sha256()
            with archive.open(name) as stream, open(destination, "wb") as handle:
                for block in iter(lambda: stream.read(_CHUNK), b""):
                    digest.update(block)
                    handle.write(block)
            if digest.hexdigest() != expected["sha256"]:
                raise TranssegError(f"{source}: member '{name}' refused: its sha256 {digest.hexdigest()} differs "
                                    f"from the manifest's {expected['sha256']} (damaged or altered).")
    plans = load_plans(target / "plans.json")
    if (plans.dataset_name, plans.plans_name) != (manifest["dataset_name"], manifest["plans_name"]):
        raise TranssegError(f"{source}: member 'plans.json' is for {plans.dataset_name}/{plans.plans_name}, the "
                            f"manifest says {manifest['dataset_name']}/{manifest['plans_name']}.")
    for name in sorted(members):
        if name.endswith(".pt"):
            _check_checkpoint(target / name, f"{source}: member '{name}'", plans)
    return manifest


def install_model(source: PathLike, results_root: PathLike, overwrite: bool = False) -> Path:
    """Unpack an exported model into ``<results_root>/<dataset>/<plans>`` after checking it; returns that folder.

    An existing model folder there is refused unless ``overwrite``; it is then replaced only once the
    new one is complete and verified.
    """
    source = Path(source)
    manifest = read_manifest(source)
    target = Path(results_root) / manifest["dataset_name"] / manifest["plans_name"]
    if target.exists() and not overwrite:
        raise TranssegError(f"{target}: a model is installed there already; pass --overwrite to replace it.")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = temporary_sibling(target)
    aside = temporary_sibling(target)
    try:
        unpack_model(source, staging)
        if target.exists():
            os.rename(target, aside)
        try:
            os.rename(staging, target)
        except OSError:
            if aside.exists():                      # put the old model back
                os.rename(aside, target)
            raise
    finally:
        for leftover in (staging, aside):
            if leftover.exists():
                shutil.rmtree(leftover)
    logger.info("Installed %s (fold(s) %s, checkpoint_%s) -> %s", source, ", ".join(manifest.get("folds", [])),
                manifest.get("checkpoint"), target)
    return target


@contextlib.contextmanager
def opened_model(path: PathLike) -> Iterator[Path]:
    """A model folder to load from: ``path`` itself, or an exported zip verified and unpacked into a
    temporary folder that is removed afterwards (load everything inside the block)."""
    path = Path(path)
    if not (path.is_file() and path.suffix.lower() == ".zip"):
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="transseg_model_") as folder:
        manifest = read_manifest(path)
        model_folder = Path(folder) / manifest["dataset_name"] / manifest["plans_name"]
        unpack_model(path, model_folder)
        yield model_folder

