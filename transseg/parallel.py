"""Run one function over many cases in worker processes, with a progress bar and honest failures.

A case that raises is reported by name and the others go on. A worker that dies outright (the
kernel's out-of-memory killer, a segfault) breaks the pool; instead of hanging, every case still
in flight is reported as lost with that reason.
"""
from __future__ import annotations

import logging
import traceback
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Optional

from tqdm import tqdm

from .paths import TranssegError

logger = logging.getLogger(__name__)


@dataclass
class Outcome:
    name: str
    result: Any = None
    error: Optional[str] = None

    @property
    def ok(self) -> bool:
        return self.error is None


def describe_failure(error: BaseException) -> str:
    """One line for a case that failed: a TranssegError's own message (the user's to fix), else the
    error's type and message, with the traceback in the debug log."""
    if isinstance(error, TranssegError):
        return str(error)
    logger.debug("".join(traceback.format_exception(error)))
    return f"{type(error).__name__}: {error}"


def _call(function: Callable, argument: Any) -> tuple[Any, Optional[str]]:
    try:
        return function(argument), None
    except Exception as error:  # reported per case
        return None, describe_failure(error)


def run_cases(function: Callable[[Any], Any], named_arguments: Iterable[tuple[str, Any]],
              num_processes: int = 1, description: str = "cases") -> list[Outcome]:
    """Apply ``function`` to each argument; outcomes come back in input order."""
    items = list(named_arguments)
    outcomes: dict[int, Outcome] = {}
    progress = tqdm(total=len(items), desc=description, unit="case", disable=len(items) == 0)
    if num_processes <= 1 or len(items) <= 1:
        for index, (name, argument) in enumerate(items):
            result, error = _call(function, argument)
            outcomes[index] = Outcome(name, result, error)
            progress.update()
    else:
        with ProcessPoolExecutor(max_workers=min(num_processes, len(items))) as pool:
            pending: dict[Future, int] = {pool.submit(_call, function, arg): i for i, (_, arg) in enumerate(items)}
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    index = pending.pop(future)
                    try:
                        result, error = future.result()
                    except BrokenProcessPool:
                        result, error = None, ("lost: a worker process died (killed by the system, "
                                               "often for lack of memory; try fewer processes with -np)")
                    outcomes[index] = Outcome(items[index][0], result, error)
                    progress.update()
    progress.close()
    return [outcomes[i] for i in range(len(items))]


def raise_on_failures(outcomes: list[Outcome], what: str) -> None:
    failures = [o for o in outcomes if not o.ok]
    if failures:
        lines = "\n".join(f"  {o.name}: {o.error}" for o in failures)
        raise TranssegError(f"{what} failed for {len(failures)} of {len(outcomes)} cases:\n{lines}")
