"""Training-step speed and peak memory of the inflated ViT + UPerNet on this machine's device.

Runs the trainer's own pieces (model, AdamW groups, DiceFocal, bf16 autocast on CUDA, clipping) on
random windows, so the figure is the network's cost without the data loader:

    python benchmarks/train_step.py                                # CPU: vit_tiny at 128 x 128, batch 8
    python benchmarks/train_step.py --device cuda --backbone beit_base_patch16_224 --resolution 512 --batch 16

On CUDA it also prints the planner's memory estimate for the same configuration, for calibration.

``--loop`` instead runs the real training loop (``transseg_train``: loader, host sync, logging) on
a generated example task, times the network's work inside it (micro-steps and optimiser step),
and prints the share of a step spent outside the network: waiting for data, and the rest.

    python benchmarks/train_step.py --loop [--loop_steps 40] [--workers 1]
"""
from __future__ import annotations

import argparse
import contextlib
import platform
import resource
import time

import torch

from transseg.model import ModelConfig, build_model
from transseg.planning.backbones import describe_backbone
from transseg.planning.memory import estimate_memory
from transseg.training.loss import dice_focal_loss
from transseg.training.optim import make_optimizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--backbone", default=None)
    parser.add_argument("--resolution", type=int, default=None)
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--slices", type=int, default=5)
    parser.add_argument("--classes", type=int, default=14)
    parser.add_argument("--decoder_channels", type=int, default=None)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--loop", action="store_true", help="also measure the training loop's overhead per step")
    parser.add_argument("--loop_steps", type=int, default=40)
    parser.add_argument("--workers", type=int, default=1, help="loader workers of the --loop run")
    args = parser.parse_args()
    if args.loop:
        loop_overhead(args)
        return
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    backbone = args.backbone or ("beit_base_patch16_224" if cuda else "vit_tiny_patch16_224")
    resolution = args.resolution or (512 if cuda else 128)
    batch = args.batch or (16 if cuda else 8)
    width = describe_backbone(backbone).width
    decoder = args.decoder_channels or (768 if width >= 768 else width)
    config = ModelConfig(backbone=backbone, pretrained=None, num_classes=args.classes, image_size=(resolution, resolution),
                         slices=args.slices, decoder_channels=decoder)
    model = build_model(config).to(device).train()
    optimizer = make_optimizer(model, "adamw", 3e-5, 0.05)
    images = torch.randn(batch, 1, args.slices, resolution, resolution, device=device)
    targets = torch.randint(0, args.classes, (batch, resolution, resolution), device=device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else contextlib.nullcontext()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            logits = model(images)
        dice_focal_loss(logits.float(), targets).total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()

    for _ in range(args.warmup):
        step()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    if cuda:
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / args.steps
    name = torch.cuda.get_device_name(device) if cuda else (platform.processor() or platform.machine())
    print(f"{backbone}, {resolution}x{resolution}, K={args.slices}, batch {batch}, {args.classes} classes, decoder "
          f"{decoder}, {'bf16 autocast' if cuda else 'fp32'}, {name}, torch threads {torch.get_num_threads()}")
    print(f"{1 / seconds:.2f} steps/s, {batch / seconds:.1f} windows/s, {seconds * 1000:.0f} ms/step")
    if cuda:
        peak = torch.cuda.max_memory_allocated(device) / 1024 ** 3
        estimate = estimate_memory(describe_backbone(backbone), (resolution, resolution), args.slices, 1, decoder,
                                   args.classes)
        print(f"peak GPU memory {peak:.2f} GiB; the planner's model estimates {estimate.total_gb(batch):.2f} GiB "
              f"({estimate.static_bytes / 1024 ** 3:.2f} static + {batch} x "
              f"{estimate.per_window_bytes / 1024 ** 3:.3f} per window)")
    else:
        print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2:.2f} GiB")


def _timed_network(trainer_class, device: torch.device) -> list[float]:
    """Wrap the trainer's network work (micro-steps and the optimiser step) to time it; per-step seconds."""
    per_step, current = [], [0.0]

    def timed(method):
        def wrapper(self, *args, **kwargs):
            start = time.perf_counter()
            result = method(self, *args, **kwargs)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            current[0] += time.perf_counter() - start
            return result
        return wrapper

    def record(method):
        def wrapper(self, *args, **kwargs):
            per_step.append(current[0])
            current[0] = 0.0
            return method(self, *args, **kwargs)
        return wrapper

    trainer_class._micro_step = timed(trainer_class._micro_step)
    trainer_class._optimizer_step = timed(trainer_class._optimizer_step)
    trainer_class._step_record = record(trainer_class._step_record)
    return per_step


def loop_overhead(args) -> None:
    """The training loop on a generated task: each step's wall time against the time of its network work."""
    import json
    import logging
    import tempfile
    from pathlib import Path

    from transseg.cli.plan_and_preprocess import main as plan_and_preprocess
    from transseg.example import ExampleSettings, make_example_task
    from transseg.training.config import TrainOptions
    from transseg.training.entrypoints import run_training
    from transseg.training.trainer import Trainer

    logging.basicConfig(level=logging.WARNING)
    backbone = args.backbone or "vit_tiny_patch16_224"
    batch = args.batch or 8
    device = torch.device(args.device)
    network = _timed_network(Trainer, device)
    with tempfile.TemporaryDirectory() as temporary:
        roots = {kind: Path(temporary) / kind for kind in ("raw", "preprocessed", "results")}
        make_example_task(roots["raw"], ExampleSettings(task_id=99, num_training=6, num_test=0))
        assert plan_and_preprocess(["-d", "99", "-np", "1", "--backbone", backbone, "--min_resolution",
                                    str(args.resolution or 64), "--no_pretrained", "--raw_root", str(roots["raw"]),
                                    "--preprocessed_root", str(roots["preprocessed"])]) == 0
        fold = run_training(TrainOptions(
            dataset="99", fold="0", device=args.device, steps=args.loop_steps, batch_size=batch, no_pretrained=True,
            val_every=10 ** 6, save_every=10 ** 6, final_validation=False,
            overrides=[f"training.loader_workers={args.workers}", f"training.batch_size_per_gpu={batch}"],
            preprocessed_root=str(roots["preprocessed"]), results_root=str(roots["results"])))
        records = [json.loads(line) for line in (fold / "metrics.jsonl").read_text().splitlines()]
        size = json.loads((fold / "run.json").read_text())["model_config"]["image_size"]
    steady = range(5, len(records) - 1)       # after start-up; the last step holds the closing validation
    step = sum(records[i]["step_seconds"] for i in steady)
    data = sum(records[i]["data_seconds"] for i in steady)
    inside = sum(network[i] for i in steady)
    print(f"{backbone}, {size[0]}x{size[1]}, K=5, batch {batch}, {args.device}, {args.workers} loader worker(s), "
          f"torch threads {torch.get_num_threads()}, {len(steady)} steady steps of {args.loop_steps}")
    print(f"step {step / len(steady) * 1000:.0f} ms, of which the network {inside / len(steady) * 1000:.0f} ms")
    print(f"outside the network: {(step - inside) / step:.1%} of a step (waiting for data {data / step:.1%}; "
          f"the rest {(step - inside - data) / step:.1%}: the one host sync, the log record, the progress bar)")


if __name__ == "__main__":
    main()
