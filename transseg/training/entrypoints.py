"""``run_training``: everything around the loop of one fold, as a Python function.

Results go to ``$TRANSSEG_results/DatasetXXX_Name/<plans_name>/``: a copy of plans.json and of
the raw dataset.json (so the folder alone can predict), and ``fold_N/`` with the checkpoints,
training_log.txt, metrics.jsonl, progress.png, run.json and, at the end, ``validation/`` (the
fold's validation cases predicted in their original geometry) with its ``summary.json``.
:func:`run_training` also redoes only that last part (``--val``), and ``--c`` on a finished fold
whose validation is missing does it.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Optional

from ..checkpoint import FINAL, LATEST, check_belongs, checkpoint_file, load_checkpoint
from ..files import load_json, save_json
from ..paths import TranssegError, find_dataset_folder, get_root
from ..planning.entrypoints import preprocessed_dataset_folder
from ..planning.fingerprint import fingerprint_path
from ..planning.plans import Plans, TrainingPlan, load_plans, plans_path
from ..preprocessing import case_is_current, list_cases, preprocessed_cases_folder
from .config import TrainOptions, apply_overrides, batch_plan, model_config_from_plans
from .distributed import DistributedContext, barrier, init_distributed, shutdown_distributed
from .final_validation import final_validation_done, predict_and_evaluate_validation
from .progress import MetricsLog, attach_log_file
from .splits import fold_cases, fold_folder_name, load_or_create_splits, parse_fold
from .trainer import FoldSetup, Trainer, build_network

logger = logging.getLogger(__name__)


def model_folder(results_root: Path, dataset_name: str, plans_name: str) -> Path:
    return Path(results_root) / dataset_name / plans_name


def _preprocessed_ids(cases_folder: Path, plans: Plans, dataset: str) -> list[str]:
    identifiers = list_cases(cases_folder)
    if not identifiers:
        raise TranssegError(f"{cases_folder}: no preprocessed cases; run transseg_plan_and_preprocess -d {dataset} "
                            f"(or transseg_preprocess) first.")
    plans_hash = plans.content_hash()
    stale = [i for i in identifiers if not case_is_current(cases_folder, i, plans_hash)]
    if stale:
        raise TranssegError(f"{cases_folder}: {len(stale)} case(s) were preprocessed with other plans or are "
                            f"damaged ({', '.join(stale[:5])}); rerun transseg_preprocess -d {dataset}.")
    return identifiers


def _dataset_json(options: TrainOptions, dataset_folder: Path) -> dict:
    """The raw dataset.json (from the raw root, else the fingerprint's source folder), else one rebuilt."""
    candidates = []
    try:
        candidates.append(find_dataset_folder(options.dataset, get_root("raw", options.raw_root)) / "dataset.json")
    except TranssegError:
        pass
    fingerprint = load_json(fingerprint_path(dataset_folder)) if fingerprint_path(dataset_folder).is_file() else {}
    if fingerprint.get("source_folder"):
        candidates.append(Path(fingerprint["source_folder"]) / "dataset.json")
    for candidate in candidates:
        if candidate.is_file():
            return load_json(candidate)
    channels = {str(i): c["name"] for i, c in enumerate(fingerprint.get("channels", []))}
    return {"name": dataset_folder.name, "modality": channels, "labels": fingerprint.get("labels", {}),
            "note": "rebuilt by transseg_train from fingerprint.json: the raw dataset.json was not found"}


def _write_model_folder(folder: Path, plans_file: Path, dataset_json: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / "plans.json"
    if not target.is_file() or target.read_bytes() != plans_file.read_bytes():
        save_json(load_json(plans_file), target)
    save_json(dataset_json, folder / "dataset.json")


def prepare_fold(options: TrainOptions, context: DistributedContext) -> tuple[FoldSetup, Optional[dict]]:
    """Resolve folders, plans, overrides, split and checkpoint; also the checkpoint state to resume from."""
    dataset_folder = preprocessed_dataset_folder(options.dataset, options.raw_root, options.preprocessed_root)
    plans_file = plans_path(dataset_folder, options.plans_name)
    if not plans_file.is_file():
        raise TranssegError(f"{plans_file}: no plans yet; run transseg_plan_and_preprocess -d {options.dataset} first.")
    plans = load_plans(plans_file)
    cases_folder = preprocessed_cases_folder(dataset_folder, plans.cases_folder_name(options.plans_name))
    identifiers = _preprocessed_ids(cases_folder, plans, options.dataset)
    fold = parse_fold(options.fold)
    splits = []
    if fold != "all":
        if context.is_main:
            splits = load_or_create_splits(dataset_folder, identifiers, plans.training.num_folds)
        barrier(context)
        if not context.is_main:
            splits = load_or_create_splits(dataset_folder, identifiers, plans.training.num_folds)
    train_ids, val_ids = fold_cases(fold, splits, identifiers)

    output = model_folder(get_root("results", options.results_root), plans.dataset_name, options.plans_name)
    fold_folder = output / fold_folder_name(fold)
    resume_state, base, source = None, plans, None
    if options.validation_only:
        source = checkpoint_file(fold_folder, options.checkpoint)
        if not source.is_file():
            raise TranssegError(f"{source}: not found; --val predicts the validation cases from a trained fold's "
                                f"checkpoint (train it first, or choose another with -chk).")
    elif options.resume and (fold_folder / LATEST).is_file():
        source = fold_folder / LATEST
    if source is not None:
        resume_state = load_checkpoint(source)
        check_belongs(resume_state, source, plans.dataset_name, options.plans_name, plans.content_hash())
        base = Plans.from_dict(resume_state["plans"], f"{source} (plans)")
    elif options.resume:
        logger.warning("%s: no %s to continue from; starting this fold from step 0.", fold_folder, LATEST)
    elif not options.overwrite and any((fold_folder / n).is_file() for n in (LATEST, FINAL)):
        raise TranssegError(f"{fold_folder} already holds a training run; continue it with --c, or start it "
                            f"afresh with --overwrite (the fold folder is then deleted first).")
    effective, applied = apply_overrides(base, options.all_overrides(), str(plans_file))
    training = effective.training
    batch = batch_plan(training.global_batch_size, training.batch_size_per_gpu, context.world_size)
    if context.is_main:
        _write_model_folder(output, plans_file, _dataset_json(options, dataset_folder))
        if options.overwrite and not options.resume and not options.validation_only:
            clear_fold(fold_folder)
        fold_folder.mkdir(parents=True, exist_ok=True)
    barrier(context)
    setup = FoldSetup(plans=effective, plans_hash=plans.content_hash(), model_config=model_config_from_plans(effective),
                      batch=batch, cases_folder=cases_folder, fold_folder=fold_folder, fold=fold, train_ids=train_ids,
                      val_ids=val_ids, overrides=applied, resume_from=source)
    return setup, resume_state


def clear_fold(fold_folder: Path) -> None:
    """``--overwrite``: the previous run's checkpoints, logs and validation go before the first step, so
    nothing (``transseg_predict`` least of all) can mistake them for the new run's."""
    if fold_folder.is_dir():
        logger.info("%s: --overwrite, removing the previous run of this fold.", fold_folder)
        shutil.rmtree(fold_folder)


def distributed_timeout_minutes(options: TrainOptions) -> float:
    """``training.distributed_timeout_minutes`` of plans.json with this run's overrides (read before the
    process group exists, so from the plans file, not a checkpoint)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return TrainingPlan.distributed_timeout_minutes      # one process: no group, no waits
    dataset_folder = preprocessed_dataset_folder(options.dataset, options.raw_root, options.preprocessed_root)
    plans_file = plans_path(dataset_folder, options.plans_name)
    if not plans_file.is_file():
        raise TranssegError(f"{plans_file}: no plans yet; run transseg_plan_and_preprocess -d {options.dataset} first.")
    effective, _ = apply_overrides(load_plans(plans_file), options.all_overrides(), str(plans_file))
    return effective.training.distributed_timeout_minutes


def _describe(setup: FoldSetup, context: DistributedContext) -> dict:
    training = setup.plans.training
    return {"dataset": setup.plans.dataset_name, "plans_name": setup.plans.plans_name, "fold": str(setup.fold),
            "train_cases": len(setup.train_ids), "validation_cases": len(setup.val_ids),
            "device": str(context.device), "world_size": context.world_size,
            "global_batch": setup.batch.global_batch, "per_gpu_batch": setup.batch.per_gpu_batch,
            "accumulation": setup.batch.accumulation, "steps": training.steps, "overrides": setup.overrides,
            "model_config": setup.model_config.to_dict(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}


def run_training(options: TrainOptions) -> Path:
    """Train one fold (this process's rank of it), or only validate it (``--val``); returns the fold folder."""
    context = init_distributed(options.device, distributed_timeout_minutes(options))
    transseg_logger = logging.getLogger("transseg")
    if not context.is_main:
        transseg_logger.setLevel(logging.WARNING)
    handler, metrics = None, None
    try:
        setup, state = prepare_fold(options, context)
        if context.is_main:
            handler = attach_log_file(setup.fold_folder)
        if options.validation_only:
            _validate_from(state, setup, context, options)
            return setup.fold_folder
        if options.resume and (setup.fold_folder / FINAL).is_file() and state is not None \
                and int(state["step"]) >= setup.plans.training.steps:
            if options.final_validation and setup.val_ids and not final_validation_done(setup.fold_folder):
                logger.info("%s: trained, but its final validation is missing; doing it now from %s.",
                            setup.fold_folder, FINAL)
                _validate_from(load_checkpoint(setup.fold_folder / FINAL, mapped=True), setup, context, options)
            else:
                logger.info("%s: this fold has finished (%s); nothing to continue.", setup.fold_folder, FINAL)
            return setup.fold_folder
        if context.is_main:
            description = _describe(setup, context)
            save_json(description, setup.fold_folder / "run.json")
            logger.info("Training %s", json.dumps(description))
            metrics = MetricsLog(setup.fold_folder, int(state["step"]) if state else None)
        trainer = Trainer(setup, context, state)
        del state
        result = trainer.run(metrics)
        logger.info("Finished fold %s at step %d; best validation moving average %s (step %s).", setup.fold,
                    result.step, None if result.best_ema is None else round(result.best_ema, 4), result.best_step)
        if options.final_validation and setup.val_ids:
            predict_and_evaluate_validation(trainer.network, setup, context,
                                            save_probabilities=options.save_probabilities)
        return setup.fold_folder
    finally:
        if metrics is not None:
            metrics.close()
        if handler is not None:
            transseg_logger.removeHandler(handler)
            handler.close()
        shutdown_distributed()


def _validate_from(state: dict, setup: FoldSetup, context: DistributedContext, options: TrainOptions) -> dict:
    """The final validation of the network stored in a checkpoint ``state`` (``--val``, or ``--c`` on a
    fold whose validation is missing)."""
    if not setup.val_ids:
        raise TranssegError(f"fold {setup.fold} has no validation cases (fold 'all' trains on every case).")
    logger.info("Validating fold %s from the checkpoint of step %s.", setup.fold, state.get("step"))
    network = build_network(setup.model_config, state).to(context.device)
    return predict_and_evaluate_validation(network, setup, context, save_probabilities=options.save_probabilities)
