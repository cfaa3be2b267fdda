"""Distributed data parallel: the process group, synchronised batch norm, and a one-machine launcher.

Under ``torchrun`` (one node or many; see documentation/training.md for SLURM) the usual RANK,
WORLD_SIZE, LOCAL_RANK and MASTER_* variables are set and each process joins the group: NCCL on
GPUs, gloo on CPUs. ``--num_gpus N`` on one machine starts the same N processes itself
(:func:`launch_local`). UPerNet's batch norms are synchronised over the ranks, so N ranks with
batch b normalise exactly as one process with batch N b: torch's SyncBatchNorm on GPUs, and
:class:`CpuSyncBatchNorm` (all-reduced moments, differentiable) on CPUs, where torch has none.
"""
from __future__ import annotations

import datetime
import logging
import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
import torch.distributed as dist
from torch import nn

from ..devices import resolve_device, usable_cpus

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistributedContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    local_world_size: int = 1                 # ranks on this node (torchrun's LOCAL_WORLD_SIZE)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device_kind: str, timeout_minutes: float = 60.0) -> DistributedContext:
    """Join the process group when launched with WORLD_SIZE > 1; otherwise a single-process context.

    ``timeout_minutes`` bounds every wait at a collective (and the start-up rendezvous): long enough
    for one rank's share of a validation or a checkpoint write on a slow file system, short enough
    that a dead rank stops the others within the hour instead of NCCL's silent 10 minutes.
    """
    device = resolve_device(device_kind)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistributedContext(device=device)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    local_world_size = int(os.environ.get("LOCAL_WORLD_SIZE", str(world_size)))
    if device.type == "cuda":
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                timeout=datetime.timedelta(minutes=timeout_minutes))
    return DistributedContext(rank, world_size, local_rank, device, local_world_size)


def shutdown_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier(context: DistributedContext) -> None:
    if context.distributed:
        dist.barrier()


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks whose gradient is the sum over ranks too (every rank's loss depends on the sum)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class CpuSyncBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are all-reduced over the process group (gloo, CPU).

    Mean and biased variance come from the global sums, exactly as one process would compute them
    from the concatenated batch; the all-reduce is differentiable, so the gradients match too.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        all_reduce = _AllReduceSum.apply
        dims = (0, 2, 3)
        count = all_reduce(torch.tensor([x.shape[0] * x.shape[2] * x.shape[3]], dtype=x.dtype))
        mean = all_reduce(x.sum(dims)) / count
        centred = x - mean[None, :, None, None]
        variance = all_reduce((centred * centred).sum(dims)) / count
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                unbiased = variance * count / (count - 1).clamp(min=1)
                self.running_mean.lerp_(mean.detach(), self.momentum)
                self.running_var.lerp_(unbiased.detach(), self.momentum)
        normalised = centred * torch.rsqrt(variance + self.eps)[None, :, None, None]
        return normalised * self.weight[None, :, None, None] + self.bias[None, :, None, None]


def synchronise_batch_norms(model: nn.Module, device: torch.device) -> nn.Module:
    """Replace every BatchNorm2d by its synchronised twin for ``device`` (states are kept)."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    for name, child in model.named_children():
        if type(child) is nn.BatchNorm2d:
            replacement = CpuSyncBatchNorm(child.num_features, child.eps, child.momentum, child.affine,
                                           child.track_running_stats)
            replacement.load_state_dict(child.state_dict())
            setattr(model, name, replacement)
        else:
            synchronise_batch_norms(child, device)
    return model


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def launch_local(num_processes: int, command: Sequence[str], port: Optional[int] = None) -> int:
    """Run ``command`` as ranks 0..N-1 on this machine (what torchrun --standalone does).

    When one rank fails the others are stopped; the first non-zero exit status is returned.
    """
    port = port or _free_port()
    threads = max(1, usable_cpus() // num_processes)
    processes = []
    for rank in range(num_processes):
        environment = {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(num_processes),
                       "LOCAL_WORLD_SIZE": str(num_processes), "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": str(port)}
        if "OMP_NUM_THREADS" not in os.environ:      # the CPUs shared out, not each rank using all of them
            environment["OMP_NUM_THREADS"] = str(threads)
        processes.append(subprocess.Popen(list(command), env=environment))

    def forward(signum, frame) -> None:
        """SIGTERM/SIGINT to the launcher (or to its whole group): the ranks save and stop; wait for them."""
        for process in processes:
            if process.poll() is None:
                process.send_signal(signum)

    previous = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            previous[sig] = signal.signal(sig, forward)
        except ValueError:               # not the main thread
            pass
    status = 0
    try:
        remaining = list(processes)
        while remaining:
            for process in list(remaining):
                try:
                    code = process.wait(timeout=0.5)
                except subprocess.TimeoutExpired:
                    continue
                remaining.remove(process)
                if code != 0 and status == 0:
                    status = code
                    for other in remaining:
                        other.send_signal(signal.SIGTERM)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return status


def relaunch_command(argv: Sequence[str]) -> list[str]:
    """The training command for each rank: the same arguments, without --num_gpus."""
    cleaned, skip = [], False
    for argument in argv:
        if skip:
            skip = False
            continue
        if argument == "--num_gpus":
            skip = True
            continue
        if argument.startswith("--num_gpus="):
            continue
        cleaned.append(argument)
    return [sys.executable, "-m", "transseg.cli.train", *cleaned]


def all_gather_objects(context: DistributedContext, value) -> list:
    """Every rank's ``value`` in rank order (the value itself when not distributed)."""
    if not context.distributed:
        return [value]
    gathered: list = [None] * context.world_size
    dist.all_gather_object(gathered, value)
    return gathered


def reduce_mean(context: DistributedContext, values: torch.Tensor) -> torch.Tensor:
    """The mean over ranks of a small tensor, left on the rank's device (no host sync here)."""
    if not context.distributed:
        return values
    values = values.to(context.device, copy=True)
    dist.all_reduce(values)
    return values / context.world_size


def share_cases(sizes: dict[str, int], context: DistributedContext) -> list[str]:
    """This rank's cases, dealt largest first to the rank with the least work so far.

    Every rank computes the same deal from the same sizes (voxels), so the ranks' shares take
    about equally long and none waits long for another at the gather that follows.
    """
    loads, owner = [0] * context.world_size, {}
    for identifier in sorted(sizes, key=lambda i: (-sizes[i], i)):
        rank = min(range(context.world_size), key=lambda r: (loads[r], r))
        loads[rank] += sizes[identifier]
        owner[identifier] = rank
    return [i for i in sizes if owner[i] == context.rank]

