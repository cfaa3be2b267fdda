"""Training-step speed and peak memory of the inflated ViT + UPerNet on this machine's device.

Runs the trainer's own pieces (model, AdamW groups, DiceFocal, bf16 autocast on CUDA, clipping) on
random windows, so the figure is the network's cost without the data loader:

    python benchmarks/train_step.py                                # CPU: vit_tiny at 128 x 128, batch 8
    python benchmarks/train_step.py --device cuda --backbone beit_base_patch16_224 --resolution 512 --batch 16

On CUDA it also prints the planner's memory estimate for the same configuration, for calibration.
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
    args = parser.parse_args()
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


if __name__ == "__main__":
    main()
