"""transseg_predict: the card's call, folds, TTA, probabilities, failures, crash safety, exact geometry."""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from conftest import root_flags
from transseg.cli.predict import main as predict
from transseg.evaluation import evaluate_folder
from transseg.inference.inputs import input_cases
from transseg.paths import TranssegError


def _read(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


@pytest.fixture(scope="module")
def predicted(trained_example, tmp_path_factory):
    """fold 0's predictions of the three example test cases (by -m, no environment needed)."""
    output = tmp_path_factory.mktemp("predicted")
    assert predict(["-i", str(trained_example.task / "imagesTs"), "-o", str(output), "-m",
                    str(trained_example.model_folder), "--device", "cpu", "--save_probabilities", "-npp", "1"]) == 0
    return output


def test_a_trained_model_segments_the_test_cases(trained_example, predicted):
    summary = evaluate_folder(trained_example.task / "labelsTs", predicted, {0: "background", 1: "organ", 2: "lesion"})
    dice = summary["foreground_mean"]["dice"]
    print(f"\ntest-set mean foreground Dice after {trained_example.steps} CPU steps: {dice:.3f}")
    assert summary["num_cases"] == 3
    assert dice > 0.6


def test_predictions_have_the_input_geometry_and_label_values(trained_example, predicted):
    for image in sorted((trained_example.task / "imagesTs").glob("*.nii.gz")):
        reference, written = sitk.ReadImage(str(image)), sitk.ReadImage(str(predicted / image.name))
        assert written.GetSize() == reference.GetSize() and written.GetSpacing() == reference.GetSpacing()
        assert written.GetOrigin() == reference.GetOrigin() and written.GetDirection() == reference.GetDirection()
        assert set(np.unique(sitk.GetArrayFromImage(written))) <= {0, 1, 2}


def test_saved_probabilities_restore_the_written_segmentation(predicted):
    from transseg.preprocessing import restore_segmentation
    for npz in sorted(predicted.glob("*.npz")):
        with np.load(npz, allow_pickle=False) as archive:
            probabilities = archive["probabilities"]
            properties = json.loads(archive["properties_json"].tobytes().decode("utf-8"))
        assert probabilities.dtype == np.float16 and probabilities.shape[0] == 3
        assert np.allclose(probabilities.astype(np.float32).sum(0), 1.0, atol=5e-3)
        restored = restore_segmentation(probabilities, properties)
        assert np.array_equal(restored, _read(npz.with_name(npz.stem + ".nii.gz")))


def test_the_cards_call_inside_a_task_folder(trained_example, tmp_path):
    environment = {**os.environ, "TRANSSEG_results": str(trained_example.roots["results"])}
    result = subprocess.run([sys.executable, "-m", "transseg.cli.predict", "-i", "imagesTs", "-o", str(tmp_path / "preds"),
                             "--device", "cpu"], cwd=trained_example.task, env=environment, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Dataset taken from" in result.stderr and "Dataset099_Example" in result.stderr
    assert "fold(s) 0, checkpoint_final" in result.stderr
    assert re.search(r"Predicted 3 case\(s\), skipped 0, failed 0, in [0-9.]+ s\.\n$", result.stderr)  # the last line
    assert sorted(p.name for p in (tmp_path / "preds").iterdir()) == sorted(
        p.name for p in (trained_example.task / "imagesTs").glob("*.nii.gz"))


def test_ambiguity_is_an_error_listing_the_choices(trained_example, tmp_path, capsys):
    results = tmp_path / "results"
    for name in ("Dataset099_Example", "Dataset042_Other"):
        fold = results / name / "plans" / "fold_0"
        fold.mkdir(parents=True)
        shutil.copy(trained_example.fold_folder / "checkpoint_final.pt", fold)
    os.chdir(tmp_path)
    assert predict(["-i", str(trained_example.task / "imagesTs"), "-o", str(tmp_path / "p"), "--results_root",
                    str(results)]) == 1
    err = capsys.readouterr().err
    assert "holds 2 trained models" in err and "Dataset042_Other" in err and "Dataset099_Example" in err
    assert not (tmp_path / "p").exists()


def _perturbed_fold(source: Path, target: Path, seed: int, step: int) -> None:
    """A checkpoint like ``source`` with every weight scaled by 1 + 0.3 N(0, 1) noise: another fold
    (batch-norm statistics are kept: a negative running variance would make NaNs)."""
    from transseg.checkpoint import load_checkpoint, save_checkpoint
    state = load_checkpoint(source)
    generator = torch.Generator().manual_seed(seed)
    state["model"] = {name: value * (1 + 0.3 * torch.randn(value.shape, generator=generator))
                      if value.is_floating_point() and "running_" not in name else value
                      for name, value in state["model"].items()}
    save_checkpoint({**state, "step": step, "fold": target.parent.name[5:]}, target)


def _probabilities(folder: Path) -> dict[str, np.ndarray]:
    result = {}
    for npz in sorted(folder.glob("*.npz")):
        with np.load(npz, allow_pickle=False) as archive:
            result[npz.stem] = archive["probabilities"].astype(np.float32)
    return result


@pytest.fixture(scope="module")
def two_folds(trained_example, tmp_path_factory) -> Path:
    """The example model with a second, different fold 1 (fold 0's weights perturbed), and a fold-1
    checkpoint_best that differs from its checkpoint_final and says step 4242."""
    folder = tmp_path_factory.mktemp("two_folds") / "model"
    skipped = shutil.ignore_patterns("validation", "*.png", "fold_*")
    shutil.copytree(trained_example.model_folder, folder, ignore=skipped)
    shutil.copytree(trained_example.fold_folder, folder / "fold_0", ignore=skipped)
    (folder / "fold_1").mkdir()
    _perturbed_fold(trained_example.fold_folder / "checkpoint_final.pt", folder / "fold_1" / "checkpoint_final.pt",
                    seed=1, step=3131)
    _perturbed_fold(trained_example.fold_folder / "checkpoint_final.pt", folder / "fold_1" / "checkpoint_best.pt",
                    seed=2, step=4242)
    return folder


def test_the_fold_ensemble_is_the_mean_of_each_folds_probabilities(trained_example, predicted, two_folds, tmp_path,
                                                                    capsys):
    """Two different folds: the ensemble's saved probabilities are the mean of each fold's own (a dropped fold
    or an undivided sum would fail), up to the float16 they are stored in."""
    images = str(trained_example.task / "imagesTs")
    for name, folds in (("one", ["1"]), ("both", ["0", "1"])):
        assert predict(["-i", images, "-o", str(tmp_path / name), "-m", str(two_folds), "-f", *folds,
                        "--device", "cpu", "-npp", "0", "--save_probabilities"]) == 0
    assert "fold(s) 0, 1, checkpoint_final (steps 160, 3131)" in capsys.readouterr().err
    fold0, fold1, both = _probabilities(predicted), _probabilities(tmp_path / "one"), _probabilities(tmp_path / "both")
    assert sorted(both) == sorted(fold0) == sorted(fold1) and len(both) == 3
    for case in both:
        assert np.abs(fold0[case] - fold1[case]).max() > 0.2                 # the folds really differ
        assert np.allclose(both[case], (fold0[case] + fold1[case]) / 2, atol=2e-3), case


def test_the_chosen_fold_and_checkpoint_are_the_ones_loaded(trained_example, two_folds, tmp_path, capsys):
    images = str(trained_example.task / "imagesTs")
    for name, checkpoint in (("final", "final"), ("best", "best")):
        assert predict(["-i", images, "-o", str(tmp_path / name), "-m", str(two_folds), "-f", "1", "-chk", checkpoint,
                        "--device", "cpu", "-npp", "0", "--save_probabilities"]) == 0
    err = capsys.readouterr().err
    assert "fold(s) 1, checkpoint_final (steps 3131)" in err and "fold(s) 1, checkpoint_best (steps 4242)" in err
    final, best = _probabilities(tmp_path / "final"), _probabilities(tmp_path / "best")
    assert all(np.abs(final[case] - best[case]).max() > 0.1 for case in final)   # other weights were used
    assert predict(["-i", images, "-o", str(tmp_path / "x"), "-m", str(two_folds), "-f", "3"]) == 1
    assert "no checkpoint_final.pt for fold(s) ['3']" in capsys.readouterr().err


def test_a_diverged_checkpoint_is_refused_naming_file_and_weight(trained_example, two_folds, tmp_path, capsys):
    """NaN weights (a training run that diverged) would arg-max into a plausible-looking label map."""
    from transseg.checkpoint import load_checkpoint, save_checkpoint
    folder = tmp_path / "model"
    shutil.copytree(two_folds, folder, ignore=shutil.ignore_patterns("fold_1"))
    state = load_checkpoint(folder / "fold_0" / "checkpoint_final.pt")
    name = next(n for n, v in state["model"].items() if v.is_floating_point() and "running_" not in n)
    state["model"][name] = state["model"][name].clone()
    state["model"][name].view(-1)[0] = float("nan")
    save_checkpoint(state, folder / "fold_0" / "checkpoint_final.pt")
    output = tmp_path / "out"
    assert predict(["-i", str(trained_example.task / "imagesTs"), "-o", str(output), "-m", str(folder),
                    "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert f"fold_0/checkpoint_final.pt: 1 weight tensor(s) hold NaN or infinity (first: {name})" in err
    assert not output.exists() or not list(output.iterdir())


def test_parts_split_the_input_disjointly_and_continue_per_part(trained_example, predicted, tmp_path, capsys):
    """--num_parts 2: the two parts write disjoint sets whose union is a single run's files, byte for byte
    the same labels; --continue skips only the part's own finished cases. (With nothing in the background:
    -npp 0 -nps 0 preprocess and write in the main thread.)"""
    images, output = str(trained_example.task / "imagesTs"), tmp_path / "out"
    command = ["-i", images, "-o", str(output), "-m", str(trained_example.model_folder), "--device", "cpu", "-npp", "0",
               "-nps", "0", "--num_parts", "2"]
    written = []
    for part in (0, 1):
        before = set(p.name for p in output.glob("*.nii.gz")) if output.exists() else set()
        assert predict([*command, "--part_id", str(part), "--continue"]) == 0
        written.append(set(p.name for p in output.glob("*.nii.gz")) - before)
    assert written == [{"example_007.nii.gz"}, {"example_006.nii.gz", "example_008.nii.gz"}]
    assert set.union(*written) == set(p.name for p in predicted.glob("*.nii.gz"))
    for path in sorted(output.glob("*.nii.gz")):
        assert np.array_equal(_read(path), _read(predicted / path.name))
    capsys.readouterr()
    assert predict([*command, "--part_id", "1", "--continue"]) == 0
    err = capsys.readouterr().err
    assert "Part 1 of 2: 2 of the 3 case(s)" in err and "2 case(s) already predicted" in err
    assert predict([*command, "--part_id", "2"]) == 1
    assert "--part_id 2 is not one of 0 .. 1" in capsys.readouterr().err


def test_the_part_of_a_case_depends_on_its_name_only():
    from transseg.dataset import CaseFiles
    from transseg.inference.inputs import part_of
    cases = [CaseFiles(f"case_{i:03d}", (Path(f"case_{i:03d}.nii.gz"),)) for i in range(60)]
    parts = [{c.identifier for c in part_of(cases, 4, i)} for i in range(4)]
    assert sum(len(p) for p in parts) == 60 and set.union(*parts) == {c.identifier for c in cases}
    assert all(8 <= len(p) <= 22 for p in parts)                          # spread, not all in one
    shuffled = list(reversed(cases[10:])) + [CaseFiles("new_case", (Path("new.nii.gz"),))]
    assert [{c.identifier for c in part_of(shuffled, 4, i)} - {"new_case"} for i in range(4)] == [
        p - {f"case_{i:03d}" for i in range(10)} for p in parts]


def test_a_failing_case_is_named_and_the_others_are_written(trained_example, tmp_path, capsys):
    inputs = tmp_path / "in"
    shutil.copytree(trained_example.task / "imagesTs", inputs)
    (inputs / "broken.nii.gz").write_bytes(b"not an image at all")
    assert predict(["-i", str(inputs), "-o", str(tmp_path / "out"), "-m", str(trained_example.model_folder),
                    "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert "prediction failed for 1 of 4 case(s)" in err and "broken" in err and "Traceback" not in err
    assert len(list((tmp_path / "out").glob("example_*.nii.gz"))) == 3
    assert not (tmp_path / "out" / "broken.nii.gz").exists()


def test_an_input_without_images_is_refused(trained_example, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert predict(["-i", str(tmp_path / "empty"), "-o", str(tmp_path / "out"), "-m",
                    str(trained_example.model_folder)]) == 1
    assert "no images to predict" in capsys.readouterr().err


def test_sigkill_then_continue_writes_every_case_intact(trained_example, predicted, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for index in range(6):                                   # six cases: time to be killed half way
        for source in sorted((trained_example.task / "imagesTs").glob("*.nii.gz")):
            shutil.copy(source, inputs / f"{index}_{source.name}")
    output = tmp_path / "out"
    command = [sys.executable, "-m", "transseg.cli.predict", "-i", str(inputs), "-o", str(output), "-m",
               str(trained_example.model_folder), "--device", "cpu"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None and len(list(output.glob("[0-9]_*.nii.gz"))) < 3:
        time.sleep(0.02)
    assert process.poll() is None, "prediction finished before it could be killed"
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    done_before = len(list(output.glob("[0-9]_*.nii.gz")))
    assert 3 <= done_before < 18
    assert subprocess.run([*command, "--continue"], capture_output=True).returncode == 0
    written = sorted(output.glob("*.nii.gz"))
    assert len(written) == 18 and not [p for p in output.iterdir() if p.name.startswith(".tmp-")]
    for path in written:
        assert np.array_equal(_read(path), _read(predicted / path.name.split("_", 1)[1]))


class IdentityNetwork(torch.nn.Module):
    """A stand-in model: the centre slice of channel 0 *is* the class map; logits are its one-hot."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        classes = x[:, 0, x.shape[2] // 2].round().clamp(0, self.num_classes - 1).long()
        return torch.nn.functional.one_hot(classes, self.num_classes).movedim(-1, 1).float() * 20.0


@pytest.mark.parametrize("tta", [False, True])
def test_a_label_pushed_through_the_whole_path_comes_back_identical(tmp_path, tta):
    """Real spine CT labels (permuted direction, values 21-23): preprocess -> windows, tiles, padding and
    flips of the inference code -> export, with an identity model. The grid is unchanged by the plan, so
    the round trip must be exact."""
    from conftest import require_real_data
    from transseg.dataset import CaseFiles
    from transseg.inference.case import CasePrediction, export_case, predict_case
    from transseg.inference.volume import InferenceSettings, VolumeModel, predict_probabilities
    from transseg.inference.window_spec import WindowSpec
    from transseg.planning.plans import ChannelNormalization, DataPlan
    from transseg.preprocessing import preprocess_case

    real = require_real_data()
    label_file = real / "sub-ct_seg-vert_label-22_msk.nii.gz"
    plan = DataPlan(reorient_to="LPS", slice_axis=0, in_plane_spacing=[1.5, 1.5], slice_spacing=None,
                    resolution=[32, 48], normalization=[ChannelNormalization("ct", clip=[-1000.0, 2000.0])],
                    label_values=[0, 21, 22, 23], label_names=["bg", "L2", "L3", "L4"])
    _, seg, properties = preprocess_case(CaseFiles("spine", (real / "sub-ct_label-22_ct.nii.gz",), label_file), plan)
    model = VolumeModel(IdentityNetwork(4), WindowSpec(5, 1, (32, 48)))
    probabilities = predict_probabilities([model], seg[None].astype(np.float32), torch.device("cpu"),
                                          InferenceSettings(batch_size=7, tta=tta))
    assert seg.shape[1] > 32 or seg.shape[2] > 48          # tiles were needed
    export_case(CasePrediction(properties, probabilities=probabilities), tmp_path / "spine.nii.gz")
    streamed = predict_case([model], seg[None].astype(np.float32), properties, torch.device("cpu"),
                            InferenceSettings(batch_size=7, tta=tta))
    assert streamed.probabilities is None and streamed.classes.shape == tuple(properties["shape_before_resampling"])
    export_case(streamed, tmp_path / "streamed.nii.gz")
    original = sitk.ReadImage(str(label_file))
    for name in ("spine.nii.gz", "streamed.nii.gz"):
        restored = sitk.ReadImage(str(tmp_path / name))
        assert np.array_equal(sitk.GetArrayFromImage(restored), sitk.GetArrayFromImage(original)), name
        assert restored.GetDirection() == original.GetDirection() and restored.GetOrigin() == original.GetOrigin()


def test_real_scans_come_back_in_their_own_geometry_and_format(tmp_path):
    """Brain MRI in NRRD (flipped y) and the permuted-direction spine CT, through plan -> train -> predict."""
    from conftest import require_real_data
    from transseg.cli.plan_and_preprocess import main as plan_and_preprocess
    from transseg.cli.train import main as train
    real = require_real_data()
    roots = {kind: tmp_path / kind for kind in ("raw", "preprocessed", "results")}
    tasks = {
        "Task91_Brain": ({"0": "MRI"}, {"0": "background", "1": "tumour"},
                         [("brain1_image.nrrd", "brain1_label.nrrd"), ("brain2_image.nrrd", "brain2_label.nrrd")]),
        "Task92_Spine": ({"0": "CT"}, {"0": "background", "21": "L2", "22": "L3", "23": "L4"},
                         [("sub-ct_label-22_ct.nii.gz", "sub-ct_seg-vert_label-22_msk.nii.gz")]),
    }
    for task, (modality, labels, pairs) in tasks.items():
        folder = roots["raw"] / task
        (folder / "imagesTr").mkdir(parents=True)
        (folder / "labelsTr").mkdir()
        training = []
        for image, label in pairs:
            shutil.copy(real / image, folder / "imagesTr" / image)
            shutil.copy(real / label, folder / "labelsTr" / image)
            training.append({"image": f"./imagesTr/{image}", "label": f"./labelsTr/{image}"})
        (folder / "dataset.json").write_text(json.dumps({"name": task, "modality": modality, "labels": labels,
                                                         "training": training, "test": []}))
        number = task[4:6]
        assert plan_and_preprocess(["-d", number, "-np", "1", "--backbone", "vit_tiny_patch16_224",
                                    "--min_resolution", "32", "--no_pretrained",
                                    *root_flags(roots, "raw", "preprocessed")]) == 0
        assert train([number, "all", "--device", "cpu", "--steps", "1", "--batch_size", "2", "--no_pretrained",
                      "--set", "training.loader_workers=0", *root_flags(roots, "preprocessed", "results")]) == 0
        output = tmp_path / f"pred{number}"
        assert predict(["-i", str(folder / "imagesTr"), "-o", str(output), "-d", number, "--device", "cpu",
                        "--results_root", str(roots["results"])]) == 0
        for image, _ in pairs:
            reference, written = sitk.ReadImage(str(folder / "imagesTr" / image)), sitk.ReadImage(str(output / image))
            assert written.GetSize() == reference.GetSize() and written.GetSpacing() == reference.GetSpacing()
            assert written.GetOrigin() == reference.GetOrigin() and written.GetDirection() == reference.GetDirection()
            assert set(np.unique(sitk.GetArrayFromImage(written))) <= {int(v) for v in labels}


def test_input_layouts(tmp_path):
    for name in ("a_0000.nii.gz", "a_0001.nii.gz", "b_0000.nii.gz", "b_0001.nii.gz"):
        (tmp_path / "nnunet").mkdir(exist_ok=True)
        (tmp_path / "nnunet" / name).write_bytes(b"")
    cases = input_cases(tmp_path / "nnunet", 2)
    assert [(c.identifier, [p.name for p in c.images]) for c in cases] == [
        ("a", ["a_0000.nii.gz", "a_0001.nii.gz"]), ("b", ["b_0000.nii.gz", "b_0001.nii.gz"])]
    (tmp_path / "msd").mkdir()
    for name in ("hippocampus_0001.nii.gz", "hippocampus_0002.nii.gz", "._hippocampus_0001.nii.gz", "notes.txt"):
        (tmp_path / "msd" / name).write_bytes(b"")
    assert [c.identifier for c in input_cases(tmp_path / "msd", 1)] == ["hippocampus_0001", "hippocampus_0002"]
    with pytest.raises(TranssegError, match="no such file or folder"):
        input_cases(tmp_path / "missing", 1)
