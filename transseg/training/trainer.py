"""The training loop of one fold: micro-batches in, optimiser steps, validations and checkpoints out.

Everything it needs is decided before it starts (:class:`FoldSetup`, made by ``entrypoints``);
the loop itself only steps. The torch random state (dropout, drop-path) is reseeded from
(seed, step, rank) at every step, and the batches are pure functions of the step, so a resumed
run continues exactly as the uninterrupted one would have.
"""
from __future__ import annotations

import contextlib
import logging
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from ..checkpoint import BEST, FINAL, LATEST, save_checkpoint
from ..inference.volume import InferenceSettings
from ..inference.window_spec import WindowSpec
from ..model import ModelConfig, build_model
from ..paths import TranssegError
from ..planning.plans import Plans
from .config import BatchPlan
from .distributed import DistributedContext, reduce_mean, synchronise_batch_norms
from .loader import BatchLayout, WindowBatches, default_workers, make_loader, training_cases
from .loss import LossParts, get_loss
from .optim import make_optimizer, make_scheduler
from .progress import PLOT_FILE, MetricsLog, plot_progress
from .validation import update_ema, validate

logger = logging.getLogger(__name__)
PLOT_EVERY_SECONDS = 60.0


class TrainingInterrupted(TranssegError):
    """Ctrl-C or SIGTERM: the latest state was saved; ``--c`` continues from it."""


@dataclass
class FoldSetup:
    """A fold's run, fully decided: what to train on, with which settings, where to write."""

    plans: Plans                          # effective plans (overrides applied)
    plans_hash: str                       # of the preprocessed data the cases were made with
    model_config: ModelConfig
    batch: BatchPlan
    cases_folder: Path                    # preprocessed CASE.npz/CASE.json
    fold_folder: Path
    fold: object
    train_ids: list[str]
    val_ids: list[str]
    overrides: list[str] = field(default_factory=list)
    resume_from: Optional[Path] = None

    @property
    def spec(self) -> WindowSpec:
        return WindowSpec.from_plan(self.plans.data)


@dataclass
class TrainState:
    step: int = 0
    best_ema: Optional[float] = None
    ema: Optional[float] = None
    best_step: Optional[int] = None


def _autocast(device: torch.device, precision: str):
    if device.type == "cuda" and precision in ("bf16", "fp16"):
        return torch.autocast("cuda", dtype=torch.bfloat16 if precision == "bf16" else torch.float16)
    return contextlib.nullcontext()


def _step_seed(seed: int, step: int, rank: int) -> int:
    return int(np.random.SeedSequence([seed, step, rank, 7]).generate_state(1)[0])


class StopRequest:
    """SIGTERM/SIGINT set a flag; the loop saves and stops after the current step.

    One request often arrives several times: sent to the whole process group *and* forwarded by a
    launcher (torchrun, ``--num_gpus``, SLURM). Repeats within ``REPEAT_SECONDS`` are that one
    request; only a later second Ctrl-C stops at once, without saving.
    """

    REPEAT_SECONDS = 5.0

    def __init__(self) -> None:
        self.requested = False
        self._first = 0.0
        self._previous = {}

    def __enter__(self) -> "StopRequest":
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:              # not the main thread (e.g. under a notebook runner)
                pass
        return self

    def _handle(self, signum, frame) -> None:
        if not self.requested:
            self.requested, self._first = True, time.monotonic()
            logger.warning("Stop requested (%s): saving %s after this step.", signal.Signals(signum).name, LATEST)
        elif signum == signal.SIGINT and time.monotonic() - self._first > self.REPEAT_SECONDS:
            raise KeyboardInterrupt         # a second Ctrl-C, later: stop at once

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def build_network(config: ModelConfig, state: Optional[dict] = None) -> nn.Module:
    """The network of ``config``; with a checkpoint ``state``, its weights (no pre-trained download)."""
    if state is not None:
        config = ModelConfig.from_dict({**config.to_dict(), "pretrained": None})
    try:
        network = build_model(config)
    except (ValueError, FileNotFoundError, OSError) as error:
        raise TranssegError(f"cannot build the model: {error}") from None
    if state is not None:
        network.load_state_dict(state["model"])
    return network


def checkpoints_due(step: int, steps: int, save_every: int, validated: bool, improved: bool,
                    stopping: bool) -> list[str]:
    """The checkpoint policy, in one place: which files step ``step`` writes (after its log record).

    - ``best``: when the validation's moving average improved on the best so far;
    - ``latest``: every ``save_every`` steps, at every validation, at the last step, and when a stop
      was requested (``--c`` continues from it);
    - ``final``: at the last step.
    """
    names = [BEST] if improved else []
    if validated or stopping or step % save_every == 0 or step == steps:
        names.append(LATEST)
    if step == steps:
        names.append(FINAL)
    return names


class Trainer:
    def __init__(self, setup: FoldSetup, context: DistributedContext, resume: Optional[dict] = None):
        self.setup, self.context = setup, context
        training = setup.plans.training
        self.state = TrainState()
        torch.manual_seed(training.seed)           # the same initial decoder weights on every rank and rerun
        self.network = build_network(setup.model_config, resume).to(context.device)
        if context.distributed:
            synchronise_batch_norms(self.network, context.device)
            ids = [context.local_rank] if context.device.type == "cuda" else None
            self.model: nn.Module = nn.parallel.DistributedDataParallel(self.network, device_ids=ids)
        else:
            self.model = self.network
        self.optimizer = make_optimizer(self.network, training.optimizer, training.learning_rate,
                                        training.weight_decay)
        self.scheduler = make_scheduler(self.optimizer, training.schedule, training.warmup_steps, training.steps)
        self.scaler = torch.amp.GradScaler("cuda", enabled=context.device.type == "cuda"
                                           and training.mixed_precision == "fp16")
        if resume is not None:
            self._restore(resume)
        self.loss = get_loss(training.loss)

    def _restore(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.state = TrainState(int(state["step"]), state.get("best_ema"), state.get("ema"), state.get("best_step"))
        logger.info("Resuming from %s at step %d.", self.setup.resume_from, self.state.step)

    # ------------------------------------------------------------------------------ checkpoints
    def checkpoint_state(self) -> dict:
        setup = self.setup
        return {
            "model": self.network.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
            "step": self.state.step, "best_ema": self.state.best_ema, "ema": self.state.ema,
            "best_step": self.state.best_step, "dataset_name": setup.plans.dataset_name,
            "plans_name": setup.plans.plans_name, "plans_hash": setup.plans_hash, "fold": str(setup.fold),
            "plans": setup.plans.to_dict(), "model_config": setup.model_config.to_dict(),
            "window": setup.spec.to_dict(), "overrides": list(setup.overrides),
        }

    def save(self, name: str) -> None:
        if self.context.is_main:
            save_checkpoint(self.checkpoint_state(), self.setup.fold_folder / name)

    # ------------------------------------------------------------------------------ the loop
    def loader_workers(self) -> int:
        workers = self.setup.plans.training.loader_workers
        return default_workers(self.context.local_world_size) if workers is None else workers

    def _loader(self):
        setup, training = self.setup, self.setup.plans.training
        layout = BatchLayout(setup.batch.global_batch, setup.batch.per_gpu_batch, self.context.world_size,
                             self.context.rank)
        cases = training_cases(setup.cases_folder, setup.train_ids)
        batches = WindowBatches(setup.cases_folder, cases, setup.spec, layout, augmentation=training.augmentation,
                                seed=training.seed, oversampling=training.foreground_oversampling,
                                first_step=self.state.step, steps=training.steps)
        return make_loader(batches, self.loader_workers(), pin_memory=self.context.device.type == "cuda")

    def _micro_step(self, item: dict, accumulation: int) -> torch.Tensor:
        """Forward and backward of one micro-batch; its loss parts (total, Dice, focal), detached, on the device."""
        training, device = self.setup.plans.training, self.context.device
        image = item["image"].to(device, non_blocking=True)
        target = item["target"].to(device, non_blocking=True)
        last = item["micro_batch"] == accumulation - 1
        sync = contextlib.nullcontext() if last or not self.context.distributed else self.model.no_sync()
        with sync:
            with _autocast(device, training.mixed_precision):
                logits = self.model(image)
            parts: LossParts = self.loss(logits.float(), target)
            self.scaler.scale(parts.total / accumulation).backward()
        return torch.stack([parts.total, parts.dice, parts.focal]).detach()

    def _optimizer_step(self) -> float:
        """Clip, step, advance the schedule; returns the learning rate this step used."""
        learning_rate = self.scheduler.get_last_lr()[0]
        clip = self.setup.plans.training.gradient_clip
        self.scaler.unscale_(self.optimizer)
        if clip > 0:
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return learning_rate

    def run(self, metrics: Optional[MetricsLog]) -> TrainState:
        """Step to ``training.steps``; checkpoints as :func:`checkpoints_due` says.

        The hot path syncs with the host once per optimiser step: the loss parts are summed on the
        device and read, together with every rank's stop flag, by one ``tolist()``.
        """
        setup, training, context = self.setup, self.setup.plans.training, self.context
        accumulation = setup.batch.accumulation
        progress = tqdm(total=training.steps, initial=self.state.step, desc=f"training fold {setup.fold}",
                        unit="step", disable=not context.is_main, dynamic_ncols=True)
        self.model.train()
        parts = torch.zeros(3, device=context.device)
        timer = StepTimer()
        written: list[str] = []
        with StopRequest() as stop:
            for item in self._loader():
                timer.got_batch()
                step = item["step"]
                if item["micro_batch"] == 0:
                    torch.manual_seed(_step_seed(training.seed, step, context.rank))
                    self.optimizer.zero_grad(set_to_none=True)
                    parts.zero_()
                parts += self._micro_step(item, accumulation)
                timer.computed()
                if item["micro_batch"] < accumulation - 1:
                    continue
                learning_rate = self._optimizer_step()
                self.state.step = step + 1
                record, stopping = self._step_record(parts / accumulation, learning_rate, timer, stop.requested)
                progress.update(1)
                progress.set_postfix(loss=f"{record['loss']:.4f}", windows_s=f"{record['windows_per_s']:.1f}")
                validated, improved = self._validate_if_due(record)
                written = checkpoints_due(self.state.step, training.steps, training.save_every, validated,
                                          improved, stopping)
                if metrics is not None:               # the record first: a checkpoint never runs ahead of the log
                    metrics.append(record)
                    if timer.plot_due(validated):
                        self.plot(metrics)
                for name in written:
                    self.save(name)
                timer.step_done()    # a step's time includes waiting for its batch, not validation or saving
                if stopping:         # any rank asked: all stop after the same step
                    progress.close()
                    raise TrainingInterrupted(f"stopped at step {self.state.step} of {training.steps}; "
                                              f"{setup.fold_folder / LATEST} saved. Continue with --c.")
        progress.close()
        if FINAL not in written:     # resumed at the last step: nothing left to train
            self.save(FINAL)
        if metrics is not None:
            self.plot(metrics)
        return self.state

    def _step_record(self, parts: torch.Tensor, learning_rate: float, timer: "StepTimer",
                     stop_requested: bool) -> tuple[dict, bool]:
        """The step's record (loss parts averaged over micro-batches and ranks), and whether any rank stops.

        The step's one host sync: the parts and the stop flag are reduced over the ranks on the
        device and read together.
        """
        flag = torch.tensor([float(stop_requested)], device=parts.device)
        values = reduce_mean(self.context, torch.cat([parts.to(torch.float32), flag]))
        loss, dice, focal, stop = values.tolist()
        record = {"step": self.state.step, "loss": loss, "dice_loss": dice, "focal_loss": focal,
                  "lr": learning_rate, **timer.figures(self.setup.batch.global_batch)}
        return record, stop > 0

    def _validate_if_due(self, record: dict) -> tuple[bool, bool]:
        """Validate when due, adding the figures to ``record``; (validated, the moving average improved)."""
        training, step = self.setup.plans.training, self.state.step
        if step % training.val_every and step != training.steps:
            return False, False
        settings = InferenceSettings.on(self.context.device, batch_size=2 * self.setup.batch.per_gpu_batch,
                                        precision=self.setup.plans.training.validation_precision)
        result = validate(self.network, spec=self.setup.spec, folder=self.setup.cases_folder,
                          identifiers=self.setup.val_ids, num_classes=len(self.setup.plans.data.label_values),
                          context=self.context, settings=settings)
        if result is None:                    # fold 'all': nothing to validate on
            return True, False
        self.state.ema = update_ema(self.state.ema, result.mean, training.validation_ema)
        record.update(result.record(self.setup.plans.data.label_names), val_ema_dice=self.state.ema)
        logger.info("step %d: validation Dice %.4f (per class %s), moving average %.4f", step, result.mean,
                    ", ".join(f"{s:.4f}" for s in result.per_class), self.state.ema)
        if self.state.best_ema is not None and self.state.ema <= self.state.best_ema:
            return True, False
        self.state.best_ema, self.state.best_step = self.state.ema, step
        logger.info("new best moving average %.4f: %s written", self.state.ema, BEST)
        return True, True

    def plot(self, metrics: MetricsLog) -> None:
        try:
            plot_progress(metrics, self.setup.fold_folder / PLOT_FILE)
        except Exception as error:          # a plot must never stop a training run
            logger.warning("progress.png not drawn: %s", error)


class StepTimer:
    """Where a step's wall time goes: waiting for its micro-batches (``data_seconds``), the rest
    (network, the host sync, logging) is ``step_seconds`` minus that."""

    def __init__(self) -> None:
        self.step_start = self.last_plot = time.perf_counter()
        self.waited = 0.0
        self._since = self.step_start          # when the loop last asked the loader for an item

    def got_batch(self) -> None:
        self.waited += time.perf_counter() - self._since

    def computed(self) -> None:
        self._since = time.perf_counter()

    def figures(self, windows: int) -> dict:
        seconds = time.perf_counter() - self.step_start
        return {"windows_per_s": windows / max(seconds, 1e-9), "step_seconds": seconds, "data_seconds": self.waited}

    def plot_due(self, validated: bool) -> bool:
        """Redraw at every validation and at least every ``PLOT_EVERY_SECONDS``."""
        if validated or time.perf_counter() - self.last_plot > PLOT_EVERY_SECONDS:
            self.last_plot = time.perf_counter()
            return True
        return False

    def step_done(self) -> None:
        self.step_start = self._since = time.perf_counter()
        self.waited = 0.0
