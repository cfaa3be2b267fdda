"""transseg_example: write the synthetic example task into the raw root."""
from __future__ import annotations

import argparse
import logging
from typing import Optional, Sequence

from ..example import ExampleSettings, make_example_task
from ..paths import get_root
from .common import add_root_arguments, add_verbosity, run_cli

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    defaults = ExampleSettings()
    parser = argparse.ArgumentParser(prog="transseg_example", description=__doc__)
    parser.add_argument("--task_id", type=int, default=defaults.task_id)
    parser.add_argument("--modality", choices=("CT", "MR"), default=defaults.modality,
                        help="CT: 3D CT-like; MR: 4D two-channel MR-like")
    parser.add_argument("--cases", type=int, default=defaults.num_training, help="training cases")
    parser.add_argument("--test_cases", type=int, default=defaults.num_test)
    parser.add_argument("--size", type=int, nargs=2, default=list(defaults.in_plane), metavar=("Y", "X"))
    parser.add_argument("--slices", type=int, nargs=2, default=list(defaults.slices), metavar=("MIN", "MAX"))
    parser.add_argument("--seed", type=int, default=defaults.seed)
    add_root_arguments(parser, "raw")
    add_verbosity(parser)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    def body(args):
        settings = ExampleSettings(task_id=args.task_id, modality=args.modality, num_training=args.cases,
                                   num_test=args.test_cases, in_plane=tuple(args.size), slices=tuple(args.slices),
                                   seed=args.seed)
        folder = make_example_task(get_root("raw", args.raw_root), settings)
        logger.info("Example task written to %s", folder)
    return run_cli(body, build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
