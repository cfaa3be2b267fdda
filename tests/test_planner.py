"""Planner rules on hand-made fingerprints."""
import json

import pytest

from transseg.cli.plan_experiment import main as plan_experiment_main
from transseg.paths import TranssegError
from transseg.planning.backbones import describe_backbone
from transseg.planning.memory import batch_size_for_target, estimate_memory
from transseg.planning.planner import PAPER_CT_CLIP, PlannerOptions, _oriented_cases, plan_experiment
from transseg.planning.plans import Plans


def fingerprint(spacings, shapes, orientations=None, modalities=("CT",), labels=(0, 1, 2)):
    """spacings/shapes per case in array order (Z, Y, X)."""
    orientations = orientations or ["LPS"] * len(spacings)
    stats = {"mean": 60.0, "std": 40.0, "median": 55.0, "min": -300.0, "max": 900.0,
             "percentile_00_5": -80.0, "percentile_99_5": 230.0, "num_samples": 1000}
    return {
        "schema_version": 1, "dataset_name": "Dataset001_Test",
        "channels": [{"name": m, "modality": "CT" if m == "CT" else "MR", "foreground_intensity": stats}
                     for m in modalities],
        "labels": {str(v): f"label{v}" for v in labels},
        "cases": [{"identifier": f"c{i}", "spacing": list(sp), "shape_after_crop": list(sh),
                   "shape_before_crop": list(sh), "orientation": o}
                  for i, (sp, sh, o) in enumerate(zip(spacings, shapes, orientations))],
    }


def test_ct_512_slices_plan_512_like_the_paper():
    spacings = [(5.0, 0.70, 0.70), (2.5, 0.78, 0.78), (3.0, 0.74, 0.74), (1.0, 0.80, 0.80), (2.0, 0.76, 0.76)]
    shapes = [(90, 512, 512), (120, 512, 512), (75, 512, 512), (300, 512, 512), (140, 512, 512)]
    plans = plan_experiment(fingerprint(spacings, shapes))
    assert plans.data.slice_axis == 0
    assert plans.data.resolution == [512, 512]
    assert plans.data.in_plane_spacing == pytest.approx([0.76, 0.76])
    assert plans.data.slice_spacing == pytest.approx(2.5)            # 1 mm to 5 mm: resampled to the median
    assert plans.data.normalization[0].scheme == "ct"
    assert plans.data.normalization[0].clip == [-80.0, 230.0]
    assert plans.data.window_slices == 5 and plans.data.window_stride == 1 and plans.data.predict == "center"
    assert plans.model.backbone == "beit_base_patch16_224.in22k_ft_in22k" and plans.model.inflation == "center"
    assert plans.model.decoder_channels == 768
    t = plans.training
    assert (t.global_batch_size, t.steps, t.learning_rate, t.weight_decay, t.warmup_steps, t.num_folds) == \
           (16, 25_000, 3e-5, 0.05, 20, 5)


def test_paper_ct_clip_preset():
    plans = plan_experiment(fingerprint([(2.0, 0.8, 0.8)], [(50, 512, 512)]), PlannerOptions(ct_clip="paper"))
    assert plans.data.normalization[0].clip == PAPER_CT_CLIP == [-175.0, 250.0]


def test_mri_240_plans_240_with_robust_scaling():
    spacings = [(1.0, 1.0, 1.0)] * 3
    shapes = [(155, 240, 240)] * 3
    # brain MRI stored axially: the third array axis is L-R, second A-P, first I-S
    plans = plan_experiment(fingerprint(spacings, shapes, modalities=("FLAIR", "T1w")))
    assert plans.data.slice_axis == 0                  # isotropic: the tie goes to the axial (I-S) axis
    assert plans.data.resolution == [240, 240]
    assert [n.scheme for n in plans.data.normalization] == ["mr_robust", "mr_robust"]
    assert plans.data.normalization[0].percentiles == [0.5, 99.5]
    assert plans.data.slice_spacing is None


def test_tiny_images_are_upsampled_to_at_least_224():
    spacings = [(1.0, 1.0, 1.0)] * 4
    shapes = [(36, 34, 49), (40, 36, 50), (33, 34, 48), (38, 35, 49)]
    plans = plan_experiment(fingerprint(spacings, shapes, modalities=("MRI",)))
    assert plans.data.slice_axis == 0
    assert min(plans.data.resolution) >= 224
    assert all(r % 16 == 0 for r in plans.data.resolution)
    assert plans.data.resolution[1] > plans.data.resolution[0]          # aspect ratio kept
    assert plans.data.in_plane_spacing[0] == pytest.approx(34.5 / 224)   # median 34.5 voxels of 1 mm -> 224


def test_anisotropic_axis_not_first():
    spacings = [(0.9, 0.9, 4.0), (0.8, 0.8, 3.6), (0.85, 0.85, 4.4)]
    shapes = [(256, 256, 30)] * 3
    plans = plan_experiment(fingerprint(spacings, shapes, modalities=("T2",)))
    assert plans.data.slice_axis == 2
    assert plans.data.in_plane_spacing == pytest.approx([0.85, 0.85])
    assert plans.data.resolution == [256, 256]


def test_mixed_orientation_reorients_to_the_majority():
    # two cases axial (LPS: array axes run I-S, A-P, L-R), one stored as ASL (array axes run L-R, I-S, A-P)
    spacings = [(3.0, 0.8, 0.8), (3.0, 0.8, 0.8), (0.8, 3.0, 0.8)]
    shapes = [(40, 300, 240), (42, 300, 240), (240, 41, 300)]
    cases = fingerprint(spacings, shapes, orientations=["LPS", "LPS", "ASL"])["cases"]
    oriented = _oriented_cases(cases, "LPS")[2]
    assert oriented["spacing"].tolist() == [3.0, 0.8, 0.8] and oriented["shape"].tolist() == [41, 300, 240]
    plans = plan_experiment(fingerprint(spacings, shapes, orientations=["LPS", "LPS", "ASL"]))
    assert plans.data.reorient_to == "LPS"
    assert plans.data.slice_axis == 0
    assert plans.data.in_plane_spacing == pytest.approx([0.8, 0.8])
    assert any("reoriented" in d for d in plans.decisions)


def test_single_orientation_needs_no_reorientation():
    plans = plan_experiment(fingerprint([(1.5, 1.5, 1.5)] * 2, [(73, 47, 73)] * 2, orientations=["PIR", "PIR"]))
    assert plans.data.reorient_to is None
    # PIR: numpy axis 0 runs L-R, axis 1 I-S, axis 2 A-P; the isotropic tie goes to I-S
    assert plans.data.slice_axis == 1


def test_non_contiguous_labels_are_kept_in_order():
    plans = plan_experiment(fingerprint([(2.0, 1.0, 1.0)], [(20, 240, 240)], labels=(0, 21, 22, 23)))
    assert plans.data.label_values == [0, 21, 22, 23]
    assert plans.data.label_names == ["label0", "label21", "label22", "label23"]


def test_memory_model_sets_batch_size():
    backbone = describe_backbone("beit_base_patch16_224.in22k_ft_in22k")
    estimate = estimate_memory(backbone, (512, 512), 5, 1, 768, 14)
    assert 80e6 < backbone.parameter_count() < 95e6          # BEiT-Base has 86 M parameters
    sizes = [batch_size_for_target(estimate, target, 16) for target in (4, 8, 16, 24, 80)]
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1] == 16
    assert all(16 % s == 0 and s >= 2 for s in sizes)
    assert batch_size_for_target(estimate, 1, 16) == 2        # nothing fits 1 GB: the smallest trainable batch
    small = plan_experiment(fingerprint([(2.0, 0.8, 0.8)], [(50, 512, 512)]), PlannerOptions(gpu_memory_target_gb=6))
    large = plan_experiment(fingerprint([(2.0, 0.8, 0.8)], [(50, 512, 512)]), PlannerOptions(gpu_memory_target_gb=80))
    assert small.training.batch_size_per_gpu < large.training.batch_size_per_gpu == 16
    assert small.training.estimated_memory_gb <= 6


def test_hierarchical_and_tiny_backbones():
    swin = describe_backbone("swin_base_patch4_window7_224")
    assert swin.patch_size == 4 and [s.width for s in swin.stages] == [128, 256, 512, 1024]
    plans = plan_experiment(fingerprint([(2.0, 0.8, 0.8)], [(50, 96, 96)]),
                            PlannerOptions(backbone="vit_tiny_patch16_224", min_resolution=64))
    assert plans.model.decoder_channels == 192 and plans.data.resolution == [96, 96]


def test_plans_round_trip_and_reject_unknown_keys():
    plans = plan_experiment(fingerprint([(2.0, 0.8, 0.8)], [(50, 512, 512)]))
    text = json.dumps(plans.to_dict())
    assert Plans.from_dict(json.loads(text)) == plans
    broken = json.loads(text)
    broken["training"]["learning_rat"] = 1e-4
    with pytest.raises(TranssegError, match="learning_rat"):
        Plans.from_dict(broken)
    broken = json.loads(text)
    broken["schema_version"] = 99
    with pytest.raises(TranssegError, match="schema_version"):
        Plans.from_dict(broken)


def test_cli_writes_plans_and_keeps_edited_ones(ct_task, roots):
    from transseg.cli.extract_fingerprint import main as extract_main
    assert plan_experiment_main(["-d", "99"]) == 1                     # no fingerprint yet: a clear error
    assert extract_main(["-d", "99"]) == 0
    assert plan_experiment_main(["-d", "99", "--backbone", "vit_tiny_patch16_224", "--min_resolution", "64"]) == 0
    path = roots["preprocessed"] / "Dataset099_Example" / "plans.json"
    plans = json.loads(path.read_text())
    assert plans["model"]["backbone"] == "vit_tiny_patch16_224" and plans["data"]["resolution"][1] >= 64
    plans["training"]["steps"] = 123
    path.write_text(json.dumps(plans))
    assert plan_experiment_main(["-d", "99", "--backbone", "vit_tiny_patch16_224", "--min_resolution", "64"]) == 0
    assert json.loads((path.parent / "plans.previous.json").read_text())["training"]["steps"] == 123
