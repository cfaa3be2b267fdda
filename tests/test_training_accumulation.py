"""Gradient accumulation: micro-batches add up to the step of the whole batch; micro-batches of one
window, which UPerNet's batch norm cannot train on, are refused before anything starts."""
import pytest
import torch
from torch import nn

from conftest import root_flags
from transseg.cli.train import main as train
from transseg.training.config import TrainOptions
from transseg.training.distributed import DistributedContext
from transseg.training.entrypoints import prepare_fold
from transseg.training.trainer import Trainer


def _first_step(example, results, per_gpu: int) -> tuple[int, dict, dict, dict]:
    """Accumulation, the gradients, and the weights before and after the first optimiser step with
    ``per_gpu`` windows per micro-batch (global batch 4); no dropout, batch norms in eval mode: then every
    window's loss term is independent of the others in its micro-batch, and the sum over micro-batches
    is the whole batch's."""
    options = TrainOptions(dataset="99", fold="1", device="cpu", steps=2, batch_size=4, no_pretrained=True,
                           overrides=["training.loader_workers=0", f"training.batch_size_per_gpu={per_gpu}",
                                      "model.drop_path_rate=0", "model.decoder_dropout=0"],
                           preprocessed_root=str(example.roots["preprocessed"]), results_root=str(results))
    context = DistributedContext()
    setup, _ = prepare_fold(options, context)
    trainer = Trainer(setup, context)
    trainer.model.train()
    for module in trainer.network.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()
    trainer.optimizer.zero_grad(set_to_none=True)
    accumulation = setup.batch.accumulation
    loader = iter(trainer._loader())
    for _ in range(accumulation):
        item = next(loader)
        assert item["step"] == 0
        trainer._micro_step(item, accumulation)
    gradients = {n: p.grad.clone() for n, p in trainer.network.named_parameters() if p.grad is not None}
    before = {n: p.detach().clone() for n, p in trainer.network.named_parameters()}
    trainer._optimizer_step()
    return accumulation, gradients, before, {n: p.detach().clone() for n, p in trainer.network.named_parameters()}


def test_two_micro_batches_make_the_step_of_one_batch(trained_example, tmp_path):
    whole, whole_gradients, initial, whole_weights = _first_step(trained_example, tmp_path / "one", 4)
    parts, part_gradients, _, part_weights = _first_step(trained_example, tmp_path / "two", 2)
    assert (whole, parts) == (1, 2)
    assert set(whole_gradients) == set(part_gradients) and len(whole_gradients) > 100
    largest = max(g.abs().max() for g in whole_gradients.values())
    for name, gradient in whole_gradients.items():
        assert torch.allclose(part_gradients[name], gradient, rtol=1e-4, atol=1e-6 * largest), name
    moved = 0
    for name, weight in whole_weights.items():
        assert torch.allclose(part_weights[name], weight, rtol=1e-5, atol=1e-6), name
        moved += not torch.equal(weight, initial[name])
    assert moved > 100                                    # the step did move the weights


@pytest.mark.parametrize("batch,per_gpu,accumulated", [("4", 1, 4), ("3", 2, 3)])
def test_micro_batches_of_one_window_are_refused_up_front(trained_example, tmp_path, capsys, batch, per_gpu,
                                                          accumulated):
    roots = {**trained_example.roots, "results": tmp_path}
    assert train(["99", "1", "--device", "cpu", "--steps", "1", "--batch_size", batch, "--no_pretrained", "--set",
                  f"training.batch_size_per_gpu={per_gpu}", *root_flags(roots, "preprocessed", "results")]) == 1
    err = capsys.readouterr().err
    assert (f"training.global_batch_size {batch} on 1 process(es) with training.batch_size_per_gpu {per_gpu} gives "
            f"micro-batches of 1 window, accumulated {accumulated} times" in err), err
    assert "batch norm needs at least 2 windows" in err and "Traceback" not in err
    assert not list(tmp_path.rglob("*.pt"))
