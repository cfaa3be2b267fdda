"""Helper for test_training_run: one micro-batch of fold 0, gradients of rank 0 written to an npz.

Run as a plain process (one rank, the whole global batch) or under launch_local (ranks share it).
Dropout is switched off: its masks are per rank by design, everything else must agree.
"""
import sys

import numpy as np
import torch

from transseg.training.config import TrainOptions
from transseg.training.distributed import init_distributed, shutdown_distributed
from transseg.training.entrypoints import prepare_fold
from transseg.training.trainer import Trainer


def main(preprocessed: str, results: str, output: str) -> None:
    torch.set_num_threads(1)
    options = TrainOptions(dataset="99", fold="0", device="cpu", steps=1, batch_size=4, no_pretrained=True,
                           overrides=["training.loader_workers=0", "training.batch_size_per_gpu=4",
                                      "model.drop_path_rate=0"], preprocessed_root=preprocessed,
                           results_root=results, overwrite=True)
    context = init_distributed("cpu")
    setup, _ = prepare_fold(options, context)
    trainer = Trainer(setup, context)
    for module in trainer.network.modules():
        if isinstance(module, (torch.nn.Dropout, torch.nn.Dropout2d)):
            module.p = 0.0
    trainer.model.train()
    item = next(iter(trainer._loader()))
    trainer._micro_step(item, setup.batch.accumulation)
    if context.is_main:
        np.savez(output, **{name: p.grad.numpy() for name, p in trainer.network.named_parameters()})
    shutdown_distributed()


if __name__ == "__main__":
    main(*sys.argv[1:4])
