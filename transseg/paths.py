"""Where raw data, preprocessed data and results live, and how a dataset id becomes a folder.

Three roots, as nnU-Net users know them: ``TRANSSEG_raw``, ``TRANSSEG_preprocessed`` and
``TRANSSEG_results``. A command-line flag overrides its variable. An unset root is only an error
when a stage actually needs it, and the error says which ``export`` line fixes it.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Optional, Union

ROOT_VARIABLES = {
    "raw": "TRANSSEG_raw",
    "preprocessed": "TRANSSEG_preprocessed",
    "results": "TRANSSEG_results",
}

_FOLDER_PATTERN = re.compile(r"^(?:Task|Dataset)(\d{2,3})_(.+)$")


class TranssegError(Exception):
    """An error the user can fix; the command-line fronts print its message without a traceback."""


def get_root(kind: str, override: Optional[Union[str, Path]] = None) -> Path:
    """The root folder of one kind ('raw', 'preprocessed', 'results'): the flag if given, else the variable."""
    variable = ROOT_VARIABLES[kind]
    value = override if override is not None else os.environ.get(variable)
    if not value:
        raise TranssegError(
            f"{variable} is not set, and no folder was given on the command line. "
            f"Tell TransSeg where the {kind} data lives, for example:\n"
            f"    export {variable}=/data/transseg_{kind}"
        )
    return Path(value).expanduser()


def parse_dataset_folder_name(name: str) -> Optional[tuple[int, str]]:
    """``Task03_Liver`` or ``Dataset003_Liver`` -> (3, 'Liver'); anything else -> None."""
    match = _FOLDER_PATTERN.match(name)
    if match is None:
        return None
    return int(match.group(1)), match.group(2)


def canonical_dataset_name(folder_name: str) -> str:
    """The name used in the preprocessed and results roots: ``DatasetXXX_Name`` whatever the raw layout."""
    parsed = parse_dataset_folder_name(folder_name)
    if parsed is None:
        return folder_name
    number, name = parsed
    return f"Dataset{number:03d}_{name}"


def _candidates(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and parse_dataset_folder_name(p.name) is not None)


def find_dataset_folder(identifier: Union[str, int], root: Path) -> Path:
    """Resolve ``3``, ``"003"``, ``Task03_Liver`` or ``Dataset003_Liver`` to exactly one folder in ``root``."""
    identifier = str(identifier).strip()
    if not root.is_dir():
        raise TranssegError(f"The data root {root} does not exist (dataset '{identifier}' was asked for).")
    candidates = _candidates(root)
    if identifier.isdigit():
        number = int(identifier)
        matches = [p for p in candidates if parse_dataset_folder_name(p.name)[0] == number]
    else:
        wanted = canonical_dataset_name(identifier)
        matches = [p for p in candidates if p.name == identifier or canonical_dataset_name(p.name) == wanted]
    if len(matches) == 1:
        return matches[0]
    existing = ", ".join(p.name for p in candidates) or "none"
    if not matches:
        raise TranssegError(f"No dataset '{identifier}' in {root}. Datasets there: {existing}.")
    raise TranssegError(
        f"Dataset id '{identifier}' is ambiguous in {root}: it matches "
        f"{', '.join(p.name for p in matches)}. Use the full folder name."
    )


def resolve_dataset_name(identifier: Union[str, int], raw_root: Optional[Path] = None,
                         preprocessed_root: Optional[Path] = None) -> str:
    """The canonical ``DatasetXXX_Name`` for an id, looked up in the raw root, else the preprocessed root."""
    errors = []
    for root in (raw_root, preprocessed_root):
        if root is None:
            continue
        try:
            return canonical_dataset_name(find_dataset_folder(identifier, root).name)
        except TranssegError as error:
            errors.append(str(error))
    raise TranssegError("\n".join(errors) or f"No data root given to resolve dataset '{identifier}'.")
