"""Helper for test_training_folds: ``transseg_train`` whose per-case scoring takes SECONDS longer.

Run under launch_local with a short ``training.distributed_timeout_minutes``: the run only
finishes if no rank waits at a collective for longer than the timeout while another scores.
"""
import sys
import time

import transseg.training.final_validation as final_validation
from transseg.cli.train import main


def slow(score):
    def scored(*args, **kwargs):
        time.sleep(float(sys.argv[1]))
        return score(*args, **kwargs)
    return scored


if __name__ == "__main__":
    final_validation.score_case = slow(final_validation.score_case)
    raise SystemExit(main(sys.argv[2:]))
