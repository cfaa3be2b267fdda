"""transseg_train end to end on the example task (vit_tiny, CPU): learning, artefacts, DDP, exact resume, errors."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import root_flags, train_arguments
from transseg.cli.train import main as train
from transseg.inference.volume import InferenceSettings, VolumeModel, predict_classes
from transseg.inference.window_spec import WindowSpec
from transseg.model import build_model
from transseg.preprocessing import load_case
from transseg.checkpoint import load_checkpoint
from transseg.training.config import model_config_from_plans
from transseg.training.distributed import launch_local
from transseg.training.validation import dice_per_class

HERE = Path(__file__).resolve().parent


def _records(fold_folder: Path) -> list[dict]:
    return [json.loads(line) for line in (fold_folder / "metrics.jsonl").read_text().splitlines()]


def _untrained_dice(example) -> float:
    """Mean foreground Dice of the same network at its initialisation, on fold 0's validation cases."""
    state = load_checkpoint(example.fold_folder / "checkpoint_final.pt")
    from transseg.planning.plans import Plans
    plans = Plans.from_dict(state["plans"])
    torch.manual_seed(plans.training.seed)
    network = build_model(model_config_from_plans(plans))
    cases = example.roots["preprocessed"] / "Dataset099_Example" / "plans"
    splits = json.loads((example.roots["preprocessed"] / "Dataset099_Example" / "splits_final.json").read_text())
    scores = []
    for identifier in splits[0]["val"]:
        data, seg, _ = load_case(cases, identifier)
        classes = predict_classes([VolumeModel(network, WindowSpec.from_plan(plans.data))], data, torch.device("cpu"),
                                  InferenceSettings(batch_size=8))
        scores.append(dice_per_class(classes, np.asarray(seg), 3))
    return float(np.mean(scores))


def test_training_lowers_the_loss_and_beats_the_untrained_model(trained_example):
    records = [r for r in _records(trained_example.fold_folder) if "loss" in r]
    first = np.mean([r["loss"] for r in records[:20]])
    last = np.mean([r["loss"] for r in records[-20:]])
    summary = json.loads((trained_example.fold_folder / "validation" / "summary.json").read_text())
    trained = summary["foreground_mean"]["dice"]
    untrained = _untrained_dice(trained_example)
    print(f"\nloss {first:.3f} -> {last:.3f}; validation Dice (original geometry) {trained:.3f}, "
          f"untrained {untrained:.3f}")
    assert last < 0.7 * first
    assert trained > untrained + 0.4
    assert trained > 0.6


def test_a_fold_leaves_checkpoints_logs_and_a_plot(trained_example):
    fold = trained_example.fold_folder
    for name in ("checkpoint_latest.pt", "checkpoint_best.pt", "checkpoint_final.pt"):
        state = torch.load(fold / name, map_location="cpu", weights_only=True)
        assert {"model", "optimizer", "scheduler", "scaler", "step", "best_ema", "ema", "plans_hash",
                "model_config", "window", "plans"} <= set(state)
    final = load_checkpoint(fold / "checkpoint_final.pt")
    assert final["step"] == trained_example.steps and final["dataset_name"] == "Dataset099_Example"
    records = _records(fold)
    assert [r["step"] for r in records if "loss" in r] == list(range(1, trained_example.steps + 1))
    validations = [r for r in records if "val_mean_dice" in r]
    assert [r["step"] for r in validations] == [40, 80, 120, 160]
    assert set(validations[0]["val_dice_per_class"]) == {"organ", "lesion"}
    best = load_checkpoint(fold / "checkpoint_best.pt")
    assert best["best_ema"] == pytest.approx(max(r["val_ema_dice"] for r in validations))
    assert (fold / "progress.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "validation Dice" in (fold / "training_log.txt").read_text()
    model_folder = trained_example.model_folder
    assert json.loads((model_folder / "dataset.json").read_text())["labels"]["2"] == "lesion"
    assert json.loads((model_folder / "plans.json").read_text())["model"]["backbone"] == "vit_tiny_patch16_224"


def test_continuing_a_finished_fold_does_nothing_and_a_rerun_needs_a_flag(trained_example, capsys):
    flags = root_flags(trained_example.roots, "preprocessed", "results")
    before = (trained_example.fold_folder / "checkpoint_final.pt").stat().st_mtime_ns
    assert train(["99", "fold0", "--c", "--device", "cpu", *flags]) == 0
    assert (trained_example.fold_folder / "checkpoint_final.pt").stat().st_mtime_ns == before
    assert train(["99", "0", "--device", "cpu", *flags]) == 1
    err = capsys.readouterr().err
    assert "already holds a training run" in err and "--c" in err and "Traceback" not in err


def _run_until(command: list, metrics: Path, step: int) -> None:
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None:
        if metrics.is_file() and any(json.loads(line)["step"] >= step for line in metrics.read_text().splitlines()
                                     if line.strip()):
            break
        time.sleep(0.02)
    assert process.poll() is None, "the run ended before it could be killed"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()


def test_sigkill_then_continue_ends_with_the_weights_of_an_uninterrupted_run(trained_example, tmp_path):
    roots = {**trained_example.roots, "results": tmp_path / "whole"}
    arguments = ["99", "1", *train_arguments(30, "--save_every", "10", "--val_every", "1000", "--no_final_validation")]
    assert train([*arguments, *root_flags(roots, "preprocessed", "results")]) == 0
    whole = load_checkpoint(roots["results"] / "Dataset099_Example" / "plans" / "fold_1" / "checkpoint_final.pt")

    cut = {**roots, "results": tmp_path / "cut"}
    fold = cut["results"] / "Dataset099_Example" / "plans" / "fold_1"
    _run_until([sys.executable, "-m", "transseg.cli.train", *arguments, *root_flags(cut, "preprocessed", "results")],
               fold / "metrics.jsonl", 13)
    assert load_checkpoint(fold / "checkpoint_latest.pt")["step"] == 10
    assert not (fold / "checkpoint_final.pt").exists()
    assert train([*arguments, "--c", *root_flags(cut, "preprocessed", "results")]) == 0
    resumed = load_checkpoint(fold / "checkpoint_final.pt")
    assert resumed["step"] == 30
    for name, tensor in whole["model"].items():
        assert torch.equal(resumed["model"][name], tensor), name              # bit-exact on the CPU
    steps = [r["step"] for r in _records(fold) if "loss" in r]
    assert steps == list(range(1, 31))


def test_two_gloo_processes_give_the_gradients_of_one_process(trained_example, tmp_path):
    script = [sys.executable, str(HERE / "ddp_gradients.py"), str(trained_example.roots["preprocessed"])]
    environment = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK")}
    single = subprocess.run([*script, str(tmp_path / "one"), str(tmp_path / "one.npz")], env=environment,
                            capture_output=True, text=True)
    assert single.returncode == 0, single.stderr[-2000:]
    assert launch_local(2, [*script, str(tmp_path / "two"), str(tmp_path / "two.npz")]) == 0
    one, two = np.load(tmp_path / "one.npz"), np.load(tmp_path / "two.npz")
    assert set(one.files) == set(two.files)
    largest = max(np.abs(one[k]).max() for k in one.files)
    for key in one.files:
        assert np.allclose(one[key], two[key], rtol=1e-4, atol=1e-6 * largest), key
    assert any("norm" in k or "ppm" in k for k in one.files)   # the synchronised batch norms took part


def test_num_gpus_on_the_cpu_launches_gloo_ranks_that_train_like_one_process(trained_example, tmp_path):
    """Two ranks of 2 windows and one process of 4 see the same global batches: the same final weights
    (to the rounding of the all-reduce; without dropout, whose masks are per rank by design)."""
    arguments = ["99", "2", *train_arguments(2, "--no_final_validation", "--val_every", "1000",
                                             "--set", "model.drop_path_rate=0", "--set", "model.decoder_dropout=0")]
    final = {}
    for name, extra in (("ranks", ["--num_gpus", "2"]), ("one", [])):
        roots = {**trained_example.roots, "results": tmp_path / name}
        assert train([*arguments, *extra, *root_flags(roots, "preprocessed", "results")]) == 0
        fold = tmp_path / name / "Dataset099_Example" / "plans" / "fold_2"
        final[name] = load_checkpoint(fold / "checkpoint_final.pt")
        run = json.loads((fold / "run.json").read_text())
        assert (run["world_size"], run["per_gpu_batch"]) == ((2, 2) if extra else (1, 4))
    assert final["ranks"]["step"] == final["one"]["step"] == 2
    assert_trained_alike(final["ranks"]["model"], final["one"]["model"], steps=2, learning_rate=1e-3)
    assert any("running_mean" in key and tensor.abs().sum() > 0 for key, tensor in final["one"]["model"].items())


def assert_trained_alike(weights: dict, reference: dict, steps: int, learning_rate: float) -> None:
    """The same training up to the rounding of an all-reduce. Adam moves each weight by about the learning
    rate per step whatever the gradient's size, so a near-zero gradient whose rounding differs moves a
    handful of weights by a fraction of it; other batches would move nearly all by about that much."""
    differences = torch.cat([(weights[k] - t).abs().flatten() for k, t in reference.items() if t.is_floating_point()])
    assert differences.max() < 0.25 * learning_rate * steps, differences.max()
    assert (differences > 1e-5).float().mean() < 1e-3, (differences > 1e-5).float().mean()


def test_a_local_pretrained_file_is_loaded_into_the_encoder(trained_example, tmp_path):
    import timm
    reference = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0)
    torch.save(reference.state_dict(), tmp_path / "vit_tiny.pth")
    roots = {**trained_example.roots, "results": tmp_path}
    assert train(["99", "3", "--device", "cpu", "--steps", "1", "--batch_size", "4", "--lr", "1e-12",
                  "--pretrained_file", str(tmp_path / "vit_tiny.pth"), "--no_final_validation",
                  "--set", "training.loader_workers=0", *root_flags(roots, "preprocessed", "results")]) == 0
    state = load_checkpoint(tmp_path / "Dataset099_Example" / "plans" / "fold_3" / "checkpoint_final.pt")
    assert state["model_config"]["pretrained_file"] == str(tmp_path / "vit_tiny.pth")
    weights = state["model"]
    # one step at a learning rate of 1e-12 moves no weight by more than 1e-9
    assert torch.allclose(weights["encoder.backbone.blocks.5.attn.qkv.weight"],
                          reference.state_dict()["blocks.5.attn.qkv.weight"], rtol=0, atol=1e-9)
    kernel = weights["encoder.backbone.patch_embed.proj.weight"]                     # (D, 1, 5, 16, 16)
    assert torch.allclose(kernel[:, 0, 2], reference.patch_embed.proj.weight.sum(1), rtol=0, atol=1e-9)
    assert kernel[:, :, [0, 1, 3, 4]].abs().max() < 1e-9


def _copy_fold(source: Path, target: Path) -> None:
    target.mkdir(parents=True)
    for name in ("checkpoint_latest.pt",):
        (target / name).write_bytes((source / name).read_bytes())


def test_checkpoints_of_other_plans_or_truncated_ones_are_refused(trained_example, tmp_path, capsys):
    from conftest import ExampleSettings, make_example_task
    from transseg.cli.plan_and_preprocess import main as plan_and_preprocess
    roots = {"raw": tmp_path / "raw", "preprocessed": tmp_path / "pre", "results": tmp_path / "res"}
    make_example_task(roots["raw"], ExampleSettings(task_id=97, name="Other", num_training=5, num_test=0, seed=3))
    assert plan_and_preprocess(["-d", "97", "-np", "1", "--backbone", "vit_tiny_patch16_224", "--min_resolution", "64",
                                *root_flags(roots, "raw", "preprocessed")]) == 0
    fold = roots["results"] / "Dataset097_Other" / "plans" / "fold_0"
    _copy_fold(trained_example.fold_folder, fold)
    assert train(["97", "0", "--c", "--device", "cpu", *root_flags(roots, "raw", "preprocessed", "results")]) == 1
    err = capsys.readouterr().err
    assert "belongs to dataset Dataset099_Example" in err and "Dataset097_Other" in err and "Traceback" not in err

    latest = fold / "checkpoint_latest.pt"
    latest.write_bytes(latest.read_bytes()[: latest.stat().st_size // 2])
    assert train(["97", "0", "--c", "--device", "cpu", *root_flags(roots, "raw", "preprocessed", "results")]) == 1
    err = capsys.readouterr().err
    assert f"{latest}: truncated or damaged checkpoint" in err and "Traceback" not in err


@pytest.mark.parametrize("arguments,message", [
    (["98", "0"], "No dataset '98'"),
    (["99", "fold7"], "fold 7 does not exist: 5 folds are defined"),
    (["99", "0", "--device", "cuda"], "--device cuda was asked for, but PyTorch sees no CUDA GPU"),
])
def test_user_errors_end_in_one_message(trained_example, tmp_path, capsys, arguments, message):
    if "cuda" in arguments and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    roots = {**trained_example.roots, "results": tmp_path}
    assert train([*arguments, *root_flags(roots, "raw", "preprocessed", "results")]) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not list(tmp_path.rglob("*.pt"))


def test_missing_preprocessing_and_offline_weights_are_explained(trained_example, tmp_path, capsys, monkeypatch):
    from conftest import ExampleSettings, make_example_task
    from transseg.cli.plan_experiment import main as plan_experiment
    from transseg.cli.extract_fingerprint import main as extract_fingerprint
    roots = {"raw": tmp_path / "raw", "preprocessed": tmp_path / "pre", "results": tmp_path / "res"}
    make_example_task(roots["raw"], ExampleSettings(task_id=96, name="Unprocessed", num_training=5, num_test=0))
    flags = root_flags(roots, "raw", "preprocessed")
    assert extract_fingerprint(["-d", "96", "-np", "1", *flags]) == 0
    assert plan_experiment(["-d", "96", "--backbone", "vit_tiny_patch16_224", "--min_resolution", "64", *flags]) == 0
    assert train(["96", "0", "--device", "cpu", *flags, *root_flags(roots, "results")]) == 1
    assert "no preprocessed cases; run transseg_plan_and_preprocess -d 96" in capsys.readouterr().err

    import huggingface_hub.constants
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")                            # read when huggingface_hub is imported,
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # which it already is here
    other = {**trained_example.roots, "results": tmp_path / "offline"}
    assert train(["99", "4", "--device", "cpu", "--steps", "1", "--set", "model.pretrained=\"timm\"",
                  *root_flags(other, "preprocessed", "results")]) == 1
    err = capsys.readouterr().err
    assert "could not get timm's pre-trained weights 'vit_tiny_patch16_224'" in err and "pretrained_file" in err
    assert "Traceback" not in err
