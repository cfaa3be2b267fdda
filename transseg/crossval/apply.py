"""A model's postprocessing.json applied to a folder of existing predictions (``transseg_apply_postprocessing``)."""
from __future__ import annotations

import logging
from functools import partial
from pathlib import Path
from typing import Union

from ..evaluation.evaluate import list_label_files
from ..parallel import raise_on_failures, run_cases
from ..paths import TranssegError
from ..postprocessing import PostprocessingRules, load_postprocessing, postprocess_file, postprocessing_path

logger = logging.getLogger(__name__)
PathLike = Union[str, Path]


def _one(paths: tuple[Path, Path], rules: PostprocessingRules) -> str:
    return str(postprocess_file(paths[0], paths[1], rules))


def apply_postprocessing_to_folder(input_folder: PathLike, output_folder: PathLike, model_folder: PathLike,
                                   num_processes: int = 1) -> list[Path]:
    """Post-process every label file of ``input_folder`` into ``output_folder`` (same names and geometry)."""
    rules = load_postprocessing(model_folder)
    if rules is None:
        raise TranssegError(f"{postprocessing_path(model_folder)}: not found; transseg_find_best_configuration "
                            f"writes it into the chosen model folder.")
    files = list_label_files(input_folder)
    if not files:
        raise TranssegError(f"{input_folder}: no label files to post-process.")
    output = Path(output_folder)
    output.mkdir(parents=True, exist_ok=True)
    jobs = [(case, (path, output / path.name)) for case, path in files.items()]
    outcomes = run_cases(partial(_one, rules=rules), jobs, max(1, num_processes), "post-processing")
    raise_on_failures(outcomes, "Post-processing")
    logger.info("Post-processed %d file(s) into %s (%s)", len(outcomes), output,
                "no step chosen: copies" if rules.is_identity else "rules of " + str(postprocessing_path(model_folder)))
    return [output / path.name for path in files.values()]
