"""Helper for test_training_folds: ``transseg_train`` on which scoring case CASE fails (its rank only).

Run as two ranks that nobody stops when one fails (as under srun), with a long
``training.distributed_timeout_minutes``: both ranks must end at once, both naming the case.
"""
import sys

import transseg.training.final_validation as final_validation
from transseg.cli.train import main
from transseg.paths import TranssegError


def failing_on(case):
    score = final_validation.score_case

    def scored(reference, prediction, *args, **kwargs):
        if case in str(prediction):
            raise TranssegError(f"{reference}: made unreadable by the test")
        return score(reference, prediction, *args, **kwargs)
    return scored


if __name__ == "__main__":
    final_validation.score_case = failing_on(sys.argv[1])
    raise SystemExit(main(sys.argv[2:]))
