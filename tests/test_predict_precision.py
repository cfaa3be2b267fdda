"""Prediction precision: bf16 on a CPU with native bf16 segments what fp32 segments; auto decides by the hardware."""
import numpy as np
import pytest
import SimpleITK as sitk
import torch

from transseg import devices
from transseg.cli.predict import main as predict
from transseg.evaluation import evaluate_folder
from transseg.inference import precision
from transseg.inference.precision import autocast_dtype, channels_last_decoder, cpu_has_native_bf16
from transseg.inference.volume import InferenceSettings, VolumeModel, predict_probabilities
from transseg.inference.window_spec import WindowSpec
from transseg.model import ModelConfig, build_model
from transseg.paths import TranssegError

CPU, CUDA = torch.device("cpu"), torch.device("cuda")
LABELS = {0: "background", 1: "organ", 2: "lesion"}


def _predict(trained_example, output, precision_name: str):
    assert predict(["-i", str(trained_example.task / "imagesTs"), "-o", str(output), "-m",
                    str(trained_example.model_folder), "--device", "cpu", "--precision", precision_name]) == 0
    return output


@pytest.mark.skipif(not cpu_has_native_bf16(), reason="this CPU has no native bf16 (oneDNN reports none): bf16 "
                                                      "would be emulated, and auto does not choose it")
def test_bf16_prediction_segments_like_fp32(trained_example, tmp_path):
    fp32 = _predict(trained_example, tmp_path / "fp32", "fp32")
    bf16 = _predict(trained_example, tmp_path / "bf16", "bf16")
    labels = trained_example.task / "labelsTs"
    dice = {name: evaluate_folder(labels, folder, LABELS)["foreground_mean"]["dice"]
            for name, folder in (("fp32", fp32), ("bf16", bf16))}
    same = total = 0
    for path in sorted(fp32.glob("*.nii.gz")):
        a = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
        b = sitk.GetArrayFromImage(sitk.ReadImage(str(bf16 / path.name)))
        same, total = same + int((a == b).sum()), total + a.size
    print(f"\nmean foreground Dice fp32 {dice['fp32']:.4f}, bf16 {dice['bf16']:.4f}; "
          f"{100 * same / total:.3f} % of {total} voxels identical")
    assert total > 0 and dice["fp32"] > 0.5
    assert abs(dice["fp32"] - dice["bf16"]) <= 0.01
    assert same / total >= 0.99


def test_the_network_really_runs_in_bf16_and_probabilities_are_averaged_in_float32():
    """bf16 changes the probabilities a little (so autocast reached the CPU network), never their float32 type."""
    torch.manual_seed(0)
    network = build_model(ModelConfig(backbone="vit_tiny_patch16_224", pretrained=None, image_size=(32, 32),
                                      num_classes=3, decoder_channels=16)).eval()
    models = [VolumeModel(network, WindowSpec(5, 1, (32, 32)))] * 2         # two "folds": a mean over models
    data = np.random.default_rng(0).uniform(-1, 1, (1, 6, 40, 36)).astype(np.float32)   # tiled and padded
    results = {}
    for name in ("fp32", "bf16"):
        settings = InferenceSettings(batch_size=4, tta=True, autocast=autocast_dtype(name, CPU))
        results[name] = predict_probabilities(models, data, CPU, settings, dtype=np.float32)
    difference = np.abs(results["fp32"] - results["bf16"]).max()
    assert 1e-4 < difference < 0.1
    assert np.abs(results["bf16"].sum(0) - 1).max() < 1e-5       # a float32 mean: in bf16 it would miss by ~1e-3


def test_auto_follows_the_hardware(monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    assert autocast_dtype("auto", CPU) == torch.bfloat16
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    assert autocast_dtype("auto", CPU) is None
    assert autocast_dtype("auto", CUDA) == torch.bfloat16
    assert autocast_dtype("fp32", CUDA) is None
    assert autocast_dtype("bf16", CPU) == torch.bfloat16          # asked for: honoured (with a warning)
    with pytest.raises(TranssegError, match="fp16"):
        autocast_dtype("fp16", CPU)


def test_native_bf16_is_read_from_the_cpu_flags(monkeypatch, tmp_path):
    flags = {"x86 with AVX512-BF16": "flags\t\t: fpu sse2 avx2 avx512f avx512_bf16\n",
             "x86 with AMX": "flags\t\t: fpu avx2 amx_bf16 amx_tile\n",
             "x86 AVX512 without bf16": "flags\t\t: fpu avx2 avx512f avx512bw avx512vl avx512dq\n",
             "ARM with bf16": "Features\t: fp asimd sve bf16 i8mm\n",
             "ARM without": "Features\t: fp asimd\n"}
    expected = {"x86 with AVX512-BF16": True, "x86 with AMX": True, "x86 AVX512 without bf16": False,
                "ARM with bf16": True, "ARM without": False}
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True, raising=False)
    for name, text in flags.items():
        path = tmp_path / name.replace(" ", "_")
        path.write_text("processor\t: 0\n" + text)
        monkeypatch.setattr(precision, "CPUINFO", path)
        precision.cpu_has_native_bf16.cache_clear()
        assert precision.cpu_has_native_bf16() is expected[name], name
    precision.cpu_has_native_bf16.cache_clear()


def test_channels_last_changes_the_layout_not_the_result():
    torch.manual_seed(0)
    network = build_model(ModelConfig(backbone="vit_tiny_patch16_224", pretrained=None, image_size=(64, 64),
                                      num_classes=3, decoder_channels=32)).eval()
    windows = torch.randn(2, 1, 5, 64, 64)
    kernel = next(m.weight for m in network.head.modules()      # 3 x 3: a 1 x 1 kernel is contiguous both ways
                  if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3))
    with torch.no_grad():
        before = network(windows)
        channels_last_decoder(network)
        assert kernel.is_contiguous(memory_format=torch.channels_last) and not kernel.is_contiguous()
        after = network(windows)
        channels_last_decoder(network, False)
        assert kernel.is_contiguous()
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)


def test_threads_follow_the_cpus_this_process_may_use(monkeypatch):
    monkeypatch.setattr(devices.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5}, raising=False)
    monkeypatch.setattr(devices, "cgroup_cpu_limit", lambda: None)
    assert devices.usable_cpus() == 6
    monkeypatch.setattr(devices, "cgroup_cpu_limit", lambda: 2.0)             # docker --cpus 2 on that machine
    assert devices.usable_cpus() == 2
    before = torch.get_num_threads()
    try:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        assert precision.set_cpu_threads() == 2 and torch.get_num_threads() == 2
        monkeypatch.setenv("OMP_NUM_THREADS", "1")                               # the user's choice wins
        assert precision.set_cpu_threads() == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_cgroup_quota_is_read(tmp_path):
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert devices.cgroup_cpu_limit(tmp_path) == 1.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert devices.cgroup_cpu_limit(tmp_path) is None


def test_compile_and_threads_reach_every_fold(tmp_path, monkeypatch):
    """--compile wraps each fold's network once; a CPU predictor sets torch's threads from the usable CPUs."""
    from synthetic_model import make_model_folder, spine_plans
    from transseg.inference import in_memory
    from transseg.inference.in_memory import Predictor
    compiled = []
    monkeypatch.setattr(in_memory.torch, "compile", lambda network: compiled.append(network) or network)
    monkeypatch.setattr(in_memory, "set_cpu_threads", lambda: compiled.append("threads"))
    folder = make_model_folder(tmp_path / "model", spine_plans(), {"0": 1, "1": 2})
    predictor = Predictor.from_model_folder(folder, device="cpu", compile=True)
    networks = [fold.model.network for fold in predictor.model.folds]
    assert compiled[0] == "threads" and compiled[1:] == networks and networks[0] is not networks[1]
    compiled.clear()
    Predictor.from_model_folder(folder, device="cpu")
    assert compiled == ["threads"]


def test_a_cpu_predictor_uses_channels_last_decoders_in_bf16_only(tmp_path):
    """Measured faster in bf16 on a CPU, slower in fp32 (ViT-Base 512²): each fold's decoder is NHWC in bf16 only."""
    from synthetic_model import make_model_folder, spine_plans
    from transseg.inference.in_memory import Predictor
    folder = make_model_folder(tmp_path / "model", spine_plans(), {"0": 1, "1": 2})
    for name, expected in (("bf16", True), ("fp32", False)):
        predictor = Predictor.from_model_folder(folder, device="cpu", precision=name)
        weights = [next(m.weight for m in fold.model.network.head.modules()              # a 3 x 3 kernel: a 1 x 1
                        if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3))  # is contiguous both ways
                   for fold in predictor.model.folds]
        assert len(weights) == 2
        assert all(w.is_contiguous(memory_format=torch.channels_last) is expected for w in weights), name
        assert all(w.is_contiguous() is not expected for w in weights), name
