"""The Python API predicts in memory along the command's own path: equal to its files voxel for voxel."""
import shutil

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from conftest import require_real_data
from synthetic_model import make_model_folder, spine_plans
from transseg.cli.predict import main as predict
from transseg.inference.in_memory import Predictor
from transseg.paths import TranssegError

SPINE_CT = "sub-ct_label-22_ct.nii.gz"      # permuted direction matrix: the hardest geometry we have


@pytest.fixture(scope="module")
def spine_model(tmp_path_factory):
    return make_model_folder(tmp_path_factory.mktemp("spine") / "Dataset091_Spine" / "plans", spine_plans(),
                             {"0": 0, "1": 1})


def _same_geometry(a: sitk.Image, b: sitk.Image) -> bool:
    return (a.GetSize(), a.GetSpacing(), a.GetOrigin(), a.GetDirection()) == (
        b.GetSize(), b.GetSpacing(), b.GetOrigin(), b.GetDirection())


def test_predict_image_and_array_equal_the_command_on_a_real_scan(spine_model, tmp_path):
    source = require_real_data() / SPINE_CT
    assert predict(["-i", str(source), "-o", str(tmp_path / "out"), "-m", str(spine_model), "--device", "cpu"]) == 0
    written = sitk.ReadImage(str(tmp_path / "out" / SPINE_CT))
    predictor = Predictor.from_model_folder(spine_model, device="cpu")
    assert [f.fold for f in predictor.model.folds] == ["0", "1"]
    image = sitk.ReadImage(str(source))
    result = predictor.predict_image(image)
    assert _same_geometry(result, image) and _same_geometry(result, written)
    expected = sitk.GetArrayFromImage(written)
    assert len(np.unique(expected)) >= 2                       # a real map, not one class everywhere
    assert np.array_equal(sitk.GetArrayFromImage(result), expected)
    array = predictor.predict_array(sitk.GetArrayFromImage(image), image.GetSpacing(), image.GetOrigin(),
                                    image.GetDirection())
    assert np.array_equal(array, expected)


def test_several_channels_as_a_list_of_images(tmp_path):
    plans = spine_plans()
    plans.data.normalization = plans.data.normalization * 2
    model = make_model_folder(tmp_path / "Dataset091_Spine" / "plans", plans, {"0": 3})
    source = require_real_data() / SPINE_CT
    image = sitk.ReadImage(str(source))
    second = sitk.Cast(image, sitk.sitkFloat32) * 0.5 + 30.0
    (tmp_path / "in").mkdir()
    sitk.WriteImage(image, str(tmp_path / "in" / "spine_0000.nii.gz"))
    sitk.WriteImage(second, str(tmp_path / "in" / "spine_0001.nii.gz"))
    assert predict(["-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "-m", str(model), "--device", "cpu"]) == 0
    predictor = Predictor.from_model_folder(model, device="cpu")
    result = predictor.predict_image([sitk.ReadImage(str(tmp_path / "in" / f"spine_000{c}.nii.gz")) for c in (0, 1)])
    assert np.array_equal(sitk.GetArrayFromImage(result),
                          sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out" / "spine.nii.gz"))))
    with pytest.raises(TranssegError, match="1 image channel"):
        predictor.predict_image(image)
    shifted = sitk.Image(second)
    shifted.SetOrigin((50.0, 0.0, 0.0))
    with pytest.raises(TranssegError, match="channel image 1's grid differs"):
        predictor.predict_image([image, shifted])


def test_precision_folds_and_checkpoint_reach_the_predictor(spine_model):
    predictor = Predictor.from_model_folder(spine_model, folds=[1], device="cpu", precision="fp32", batch_size=3)
    assert predictor.settings.autocast is None and predictor.settings.batch_size == 3
    assert [f.fold for f in predictor.model.folds] == ["1"] and predictor.model.folds[0].step == 101
    assert Predictor.from_model_folder(spine_model, folds=[0], device="cpu", precision="bf16").settings.autocast \
        == torch.bfloat16
    with pytest.raises(TranssegError, match="no checkpoint_best.pt"):
        Predictor.from_model_folder(spine_model, checkpoint="best", device="cpu")


def test_predict_image_equals_the_command_on_the_example(trained_example, tmp_path):
    images = sorted((trained_example.task / "imagesTs").glob("*.nii.gz"))
    assert predict(["-i", str(trained_example.task / "imagesTs"), "-o", str(tmp_path / "out"), "-m",
                    str(trained_example.model_folder), "--device", "cpu", "-npp", "0"]) == 0
    predictor = Predictor.from_model_folder(trained_example.model_folder, device="cpu")
    for path in images:
        image = sitk.ReadImage(str(path))
        result, written = predictor.predict_image(image), sitk.ReadImage(str(tmp_path / "out" / path.name))
        assert _same_geometry(result, image)
        assert np.array_equal(sitk.GetArrayFromImage(result), sitk.GetArrayFromImage(written)), path.name
        assert len(np.unique(sitk.GetArrayFromImage(result))) == 3
    shutil.rmtree(tmp_path / "out")


def test_the_gpu_batch_comes_from_the_memory_model():
    from transseg.inference.batch import (CPU_BATCH, GPU_MEMORY_FRACTION, MAX_GPU_BATCH, default_batch_size,
                                          gpu_batch_size)
    from transseg.planning.backbones import describe_backbone
    from transseg.planning.memory import estimate_memory
    plans = spine_plans()
    assert gpu_batch_size(plans, 80 * 2 ** 30) == MAX_GPU_BATCH                  # a tiny model: the cap
    assert plans.training.batch_size_per_gpu > CPU_BATCH
    assert default_batch_size(plans, torch.device("cpu")) == CPU_BATCH                # fastest per window on a CPU
    plans.model.backbone, plans.model.decoder_channels, plans.data.resolution = "beit_base_patch16_224", 768, [512, 512]
    estimate = estimate_memory(describe_backbone(plans.model.backbone), (512, 512), 5, 1, 768, 4)
    batches = {gb: gpu_batch_size(plans, gb * 2 ** 30) for gb in (4, 24, 80)}
    assert batches[4] == 1 and 1 < batches[24] < batches[80] < MAX_GPU_BATCH
    for gb, batch in batches.items():
        assert batch * estimate.per_window_bytes <= GPU_MEMORY_FRACTION * gb * 2 ** 30 or batch == 1
    print(f"\nBEiT-Base, 512 x 512, K=5: inference batch {batches} by free GiB")
