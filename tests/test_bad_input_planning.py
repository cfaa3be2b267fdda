"""Planning and preprocessing under bad input, as a new user meets them through the commands.

Every test asserts the exit status, a message naming the file or the field, no traceback, and that
nothing was left behind that looks valid (no fingerprint, plans or case that a later stage would
read as good).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

import transseg.planning.entrypoints as planning_entrypoints
from transseg.cli.extract_fingerprint import main as fingerprint_main
from transseg.cli.plan_and_preprocess import main as plan_and_preprocess_main
from transseg.cli.plan_experiment import main as plan_experiment_main
from transseg.cli.common import run_cli
from transseg.cli.preprocess import main as preprocess_main
from transseg.files import exclusive_lock
from transseg.preprocessing import list_cases, load_case
from transseg.preprocessing.entrypoints import LOCK_FILE

DATASET = "Dataset099_Example"
TINY = ["--backbone", "vit_tiny_patch16_224", "--min_resolution", "64", "-np", "1"]


def run(main, argv, capsys) -> tuple[int, str]:
    """Exit status and stderr of a console script run in-process; a traceback is never acceptable."""
    code = main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return code, err


def nothing_written(roots) -> None:
    """No fingerprint, no plans, no preprocessed case: nothing a later stage could take for a result."""
    written = [p for p in roots["preprocessed"].rglob("*") if p.is_file()]
    assert not written, written


def no_cases(roots) -> None:
    """Planning's files may stay (they were valid); no preprocessed case may exist."""
    folder = roots["preprocessed"] / DATASET / "plans"
    assert not folder.exists() or (list_cases(folder) == [] and not list(folder.glob("*.npz")))


def meta(task: Path) -> dict:
    return json.loads((task / "dataset.json").read_text())


def write_meta(task: Path, data: dict) -> None:
    (task / "dataset.json").write_text(json.dumps(data))


def truncate(path: Path, fraction: float = 1 / 3) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * fraction)])


def as_float_file(task: Path, index: int, suffix: str, nan_at=None) -> Path:
    """Rewrite training case ``index`` as a float32 image in another format, NaN at ``nan_at`` voxels."""
    entry = meta(task)["training"][index]
    image = sitk.ReadImage(str(task / entry["image"]))
    array = sitk.GetArrayFromImage(image).astype(np.float32)
    for voxel in ([] if nan_at is None else nan_at):
        array[tuple(voxel)] = np.nan
    out = sitk.GetImageFromArray(array)
    out.CopyInformation(image)
    path = task / "imagesTr" / f"example_{index:03d}{suffix}"
    sitk.WriteImage(out, str(path), useCompression=suffix.endswith(".gz"))
    data = meta(task)
    data["training"][index]["image"] = f"./imagesTr/{path.name}"
    write_meta(task, data)
    return path


def plan_first(roots) -> Path:
    """Valid fingerprint and plans (what a user has before editing plans.json by hand)."""
    assert plan_and_preprocess_main([*TINY, "-d", "99", "--no_preprocessing"]) == 0
    return roots["preprocessed"] / DATASET / "plans.json"


# ------------------------------------------------------------------------------------ damaged files
def test_truncated_nii_gz_is_refused_naming_the_file(ct_task, roots, capsys):
    image = ct_task / "imagesTr" / "example_001.nii.gz"
    truncate(image)
    code, err = run(plan_and_preprocess_main, [*TINY, "-d", "99"], capsys)
    assert code == 1
    assert f"{image}: truncated: the gzip stream stops after about" in err and "bytes its NIfTI header implies" in err
    nothing_written(roots)


def test_truncated_uncompressed_nii_is_refused(ct_task, roots, capsys):
    image = as_float_file(ct_task, 2, ".nii")
    truncate(image, 0.5)
    code, err = run(plan_and_preprocess_main, [*TINY, "-d", "99"], capsys)
    assert code == 1 and f"{image}: truncated: holds {image.stat().st_size} of the" in err
    nothing_written(roots)


def test_truncated_label_fails_its_case_in_preprocessing(ct_task, roots, capsys):
    plan_first(roots)
    label = ct_task / "labelsTr" / "example_003.nii.gz"
    truncate(label, 0.5)
    code, err = run(preprocess_main, ["-d", "99", "-np", "2", "--overwrite"], capsys)
    assert code == 1 and "failed for 1 of 4 cases" in err and f"{label}: truncated" in err
    folder = roots["preprocessed"] / DATASET / "plans"
    assert list_cases(folder) == ["example_000", "example_001", "example_002"]   # the good ones, complete


@pytest.mark.parametrize("where", ["background", "labelled region"])
def test_nan_in_an_image_is_an_error_with_the_count(ct_task, roots, capsys, where):
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(ct_task / "labelsTr" / "example_002.nii.gz")))
    voxels = np.argwhere(label == 0 if where == "background" else label > 0)[:3]
    image = as_float_file(ct_task, 2, ".mha", nan_at=voxels)
    code, err = run(plan_and_preprocess_main, [*TINY, "-d", "99"], capsys)
    assert code == 1 and f"{image}: 3 NaN/Inf voxel(s) (3 NaN, 0 Inf)" in err
    nothing_written(roots)


def test_nan_reaching_preprocessing_only_fails_that_case(ct_task, roots, capsys):
    plan_first(roots)
    image = as_float_file(ct_task, 0, ".nrrd", nan_at=[(1, 2, 3), (2, 2, 3)])
    code, err = run(preprocess_main, ["-d", "99", "-np", "1"], capsys)
    assert code == 1 and f"{image}: 2 NaN/Inf voxel(s)" in err
    folder = roots["preprocessed"] / DATASET / "plans"
    assert "example_000" not in list_cases(folder)
    for identifier in list_cases(folder):
        assert np.isfinite(load_case(folder, identifier)[0]).all()


def test_nan_stored_in_nifti_is_found_by_the_integrity_check(ct_task, roots, capsys):
    image = as_float_file(ct_task, 1, ".nii.gz", nan_at=[(1, 2, 3), (3, 4, 5)])
    code, err = run(plan_and_preprocess_main, [*TINY, "-d", "99", "--verify_dataset_integrity"], capsys)
    assert code == 1 and f"example_001: {image}: 2 NaN/Inf voxel(s) stored" in err
    nothing_written(roots)
    # without the check ITK reads them as 0 (documented): nothing non-finite is stored either way
    assert plan_and_preprocess_main([*TINY, "-d", "99"]) == 0
    data, _, _ = load_case(roots["preprocessed"] / DATASET / "plans", "example_001")
    assert np.isfinite(data).all()


def test_damaged_gzip_data_is_found_by_the_integrity_check(ct_task, roots, capsys):
    image = ct_task / "imagesTr" / "example_000.nii.gz"
    data = bytearray(image.read_bytes())
    data[len(data) // 2] ^= 0xFF                                  # one flipped byte in the deflate stream
    image.write_bytes(bytes(data))
    code, err = run(fingerprint_main, ["-d", "99", "--verify_dataset_integrity", "-np", "1"], capsys)
    assert code == 1 and f"example_000: {image}: damaged gzip data" in err
    nothing_written(roots)


# ----------------------------------------------------------------------------- options, before work
@pytest.mark.parametrize("value", ["4", "0", "-1", "five"])
def test_even_or_non_positive_window_is_refused_before_any_work(ct_task, roots, capsys, value):
    with pytest.raises(SystemExit) as exit_:
        plan_and_preprocess_main([*TINY, "-d", "99", "--slices", value])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "argument --slices: expected an odd int >= 1, got" in err and value in err
    nothing_written(roots)


@pytest.mark.parametrize("flag,value,words", [
    ("-np", "0", "argument -np/--num_processes: expected an int >= 1, got 0"),
    ("--min_resolution", "0", "argument --min_resolution: expected an int >= 1, got 0"),
    ("--gpu_memory_target", "-3", "argument -gpu_memory_target/--gpu_memory_target: expected a number > 0, got -3"),
    ("--decoder_channels", "x", "argument --decoder_channels: expected an int >= 1, got 'x'"),
])
def test_other_bad_numbers_are_refused_naming_the_flag(ct_task, roots, capsys, flag, value, words):
    with pytest.raises(SystemExit) as exit_:
        plan_and_preprocess_main([*TINY, "-d", "99", flag, value])
    assert exit_.value.code == 2 and words in capsys.readouterr().err
    nothing_written(roots)


@pytest.mark.parametrize("backbone,words", [
    ("vit_tiny_patch16_nosuchnet", "timm has no model 'vit_tiny_patch16_nosuchnet' (similar names: "),
    ("nosuchnet", "timm has no model 'nosuchnet'"),
    ("resnet50", "a timm model, but not a plain ViT (vit_*, deit_*, beit_*) or a Swin (swin_*)"),
    ("vit_tiny_patch16_224.nosuchtag", "timm has no pretrained tag 'nosuchtag' for vit_tiny_patch16_224"),
])
def test_backbone_checked_against_timm_before_any_work(ct_task, roots, capsys, backbone, words):
    code, err = run(plan_and_preprocess_main, [*TINY, "-d", "99", "--backbone", backbone], capsys)
    assert code == 1 and f"backbone '{backbone}': {words}" in err
    nothing_written(roots)


def test_missing_pretrained_file_is_refused_before_any_work(ct_task, roots, capsys, tmp_path):
    missing = tmp_path / "weights.safetensors"
    code, err = run(plan_and_preprocess_main, [*TINY, "-d", "99", "--pretrained_file", str(missing)], capsys)
    assert code == 1 and f"{missing}: pre-trained weights file not found" in err
    nothing_written(roots)


# ----------------------------------------------------------------------------------- dataset.json
@pytest.mark.parametrize("change,words", [
    (lambda m: m["training"][1].pop("image"), "training entry 1 ({\"label\": \"./labelsTr/example_001.nii.gz\"}) "
                                              "has no 'image' file name"),
    (lambda m: m["training"][2].pop("label"), "training entry 2 (./imagesTr/example_002.nii.gz) has no 'label'"),
    (lambda m: m.update(training=[]), "no training cases"),
    (lambda m: m.update(modality=["CT"]), "'modality' must be {\"0\": \"CT\"}, got [\"CT\"]"),
    (lambda m: m.update(training={"image": "x"}), "'training' must be a list of cases"),
    (lambda m: m.update(labels=None), "'labels' must be {\"0\": \"background\", \"1\": \"...\"}, got null"),
])
def test_malformed_dataset_json_is_one_message(ct_task, roots, capsys, change, words):
    data = meta(ct_task)
    change(data)
    write_meta(ct_task, data)
    code, err = run(plan_and_preprocess_main, [*TINY, "-d", "99"], capsys)
    assert code == 1 and f"{ct_task / 'dataset.json'}: {words}" in err
    nothing_written(roots)


def test_channel_count_differing_from_dataset_json_names_the_file(ct_task, roots, capsys):
    data = meta(ct_task)
    data["modality"] = {"0": "CT", "1": "PET"}
    write_meta(ct_task, data)
    code, err = run(plan_and_preprocess_main, [*TINY, "-d", "99"], capsys)
    image = ct_task / "imagesTr" / "example_000.nii.gz"
    assert code == 1 and "failed for 4 of 4 cases" in err
    assert f"{image}: 1 image channel(s), dataset.json declares 2" in err
    nothing_written(roots)


# ------------------------------------------------------------------------------ hand-edited files
@pytest.mark.parametrize("edit,words", [
    (lambda p: p["data"].update(window_slices="five"), 'data.window_slices: expected an odd int >= 1, got "five"'),
    (lambda p: p["data"].update(window_slices=4), "data.window_slices: expected an odd int >= 1, got 4"),
    (lambda p: p["data"].update(resolution=256), "data.resolution: expected two values, each an int >= 1, got 256"),
    (lambda p: p["data"].update(label_values=None), "data.label_values: expected a list of at least two distinct "
                                                    "ints, 0 (background) first, got null"),
    (lambda p: p["data"]["normalization"][0].update(clip=None), 'data.normalization[0].clip: expected [low, high] '
                                                                'in HU for scheme "ct", got null'),
    (lambda p: p["data"].update(label_interpolation="cubic"), "data.label_interpolation: expected one of"),
    (lambda p: p["training"].update(mixed_precision="fp8"), 'training.mixed_precision: expected one of "bf16", '
                                                            '"fp16", "fp32", got "fp8"'),
    (lambda p: p["training"]["augmentation"].update(zoom_range=[2, 0.5]),
     "training.augmentation.zoom_range: expected two values, each a number > 0, the first <= the second"),
    (lambda p: p["training"]["augmentation"].update(rotation="diagonal"),
     'training.augmentation.rotation: expected one of "quarter_turns", "uniform", got "diagonal"'),
    (lambda p: p["training"]["augmentation"].update(flip_probability=1.5),
     "training.augmentation.flip_probability: expected a number in [0, 1], got 1.5"),
    (lambda p: p["training"].update(learning_rate="fast"), 'training.learning_rate: expected a number > 0, got "fast"'),
    (lambda p: p.update(plans_name="../elsewhere"), 'plans_name: expected a plain file name'),
    (lambda p: p["data"].update(slice_axis=3), "data.slice_axis: expected one of 0, 1, 2, got 3"),
    (lambda p: p["model"].update(backbone="vit_tiny_patch16_nosuchnet"),
     "model.backbone: timm has no model 'vit_tiny_patch16_nosuchnet'"),
])
def test_hand_edited_plans_are_refused_naming_the_field(ct_task, roots, capsys, edit, words):
    plans_file = plan_first(roots)
    plans = json.loads(plans_file.read_text())
    edit(plans)
    plans_file.write_text(json.dumps(plans))
    code, err = run(preprocess_main, ["-d", "99", "-np", "1"], capsys)
    assert code == 1 and f"{plans_file}: {words}" in err
    no_cases(roots)


def test_broken_fingerprint_is_refused_by_planning(ct_task, roots, capsys):
    assert fingerprint_main(["-d", "99", "-np", "1"]) == 0
    path = roots["preprocessed"] / DATASET / "fingerprint.json"
    fingerprint = json.loads(path.read_text())
    del fingerprint["cases"][1]["spacing"]
    path.write_text(json.dumps(fingerprint))
    code, err = run(plan_experiment_main, ["-d", "99", *TINY[:4]], capsys)
    assert code == 1 and f"{path}: incomplete or hand-edited fingerprint" in err
    assert not (path.parent / "plans.json").exists()


# ------------------------------------------------------------------------------- one run at a time
def test_second_preprocessing_run_is_refused_while_the_first_runs(ct_task, roots, capsys):
    plan_first(roots)
    lock = roots["preprocessed"] / DATASET / LOCK_FILE
    with exclusive_lock(lock, "preprocessing"):                      # the first run, still going
        code, err = run(preprocess_main, ["-d", "99", "-np", "1"], capsys)
        assert code == 1 and f"{lock}: another run is preprocessing here (process {os.getpid()} on" in err
        no_cases(roots)
    assert not lock.exists()
    assert preprocess_main(["-d", "99", "-np", "1"]) == 0                # once it has finished


def test_lock_of_a_killed_run_is_taken_over(ct_task, roots):
    plan_first(roots)
    lock = roots["preprocessed"] / DATASET / LOCK_FILE
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from transseg.files import exclusive_lock\n"
        f"with exclusive_lock({str(lock)!r}, 'preprocessing'):\n"
        "    print('held', flush=True); time.sleep(60)")], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert lock.is_file() and json.loads(lock.read_text())["pid"] == holder.pid   # left behind, stale
    assert preprocess_main(["-d", "99", "-np", "1"]) == 0
    assert len(list_cases(roots["preprocessed"] / DATASET / "plans")) == 4 and not lock.exists()


# ------------------------------------------------------------------------------- the safety net
def test_unexpected_error_is_one_message_and_v_shows_the_traceback(ct_task, roots, capsys, monkeypatch):
    def broken(*args, **kwargs):
        raise ZeroDivisionError("something nobody foresaw")
    monkeypatch.setattr(planning_entrypoints, "extract_fingerprint", broken)
    code, err = run(fingerprint_main, ["-d", "99"], capsys)
    assert code == 1 and err.strip() == ("transseg_extract_fingerprint: error: unexpected ZeroDivisionError: "
                                         "something nobody foresaw (rerun with -v to see the traceback)")
    assert fingerprint_main(["-d", "99", "-v"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("Traceback") and "in broken" in err and "unexpected ZeroDivisionError" in err
    nothing_written(roots)


def test_os_errors_name_their_path_without_calling_themselves_unexpected(capsys):
    def full_disk(args):
        raise OSError(28, "No space left on device", "/data/preprocessed/Dataset099_Example/plans/x.npz")
    code = run_cli(full_disk, argparse.ArgumentParser(prog="transseg_preprocess"), [])
    err = capsys.readouterr().err
    assert code == 1 and err == ("transseg_preprocess: error: [Errno 28] No space left on device: "
                                 "'/data/preprocessed/Dataset099_Example/plans/x.npz'\n")


def test_console_script_exit_status_and_stderr_end_to_end(ct_task, roots):
    truncate(ct_task / "labelsTr" / "example_000.nii.gz")
    result = subprocess.run([sys.executable, "-m", "transseg.cli.plan_and_preprocess", *TINY, "-d", "99"],
                            capture_output=True, text=True, env=os.environ.copy())
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"{ct_task / 'labelsTr' / 'example_000.nii.gz'}: truncated" in result.stderr
    nothing_written(roots)
