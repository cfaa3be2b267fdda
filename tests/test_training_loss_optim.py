"""The loss against MONAI, the optimiser's decay set, the schedule, splits and run overrides."""
import json

import pytest
import timm
import torch
from monai.losses import DiceFocalLoss

from transseg.paths import TranssegError
from transseg.planning.plans import ChannelNormalization, DataPlan, Plans
from transseg.training.config import apply_overrides, batch_plan
from transseg.training.loss import dice_focal_loss
from transseg.training.optim import make_scheduler, no_decay_names, parameter_groups
from transseg.training.splits import fold_cases, load_or_create_splits, make_splits, parse_fold


@pytest.mark.parametrize("shape", [(4, 3, 16, 16), (2, 5, 3, 8, 8), (3, 2, 12, 10)])
def test_loss_equals_monai_dice_focal(shape):
    torch.manual_seed(sum(shape))
    logits = (torch.randn(*shape, dtype=torch.float64) * 3).requires_grad_()
    # classes absent from some samples: the last class never occurs, class 1 only in sample 0
    target = torch.randint(0, 1, (shape[0],) + shape[2:])
    target[0, ..., :4] = 1
    ours = dice_focal_loss(logits, target)
    reference = DiceFocalLoss(softmax=True, to_onehot_y=True)(logits.float(), target[:, None])
    assert float(ours.total.detach()) == pytest.approx(float(reference), rel=1e-5)
    ours_grad, = torch.autograd.grad(ours.total, logits)
    theirs_logits = logits.detach().float().requires_grad_()
    theirs_grad, = torch.autograd.grad(DiceFocalLoss(softmax=True, to_onehot_y=True)(theirs_logits, target[:, None]),
                                       theirs_logits)
    assert torch.allclose(ours_grad.float(), theirs_grad, rtol=1e-4, atol=1e-7)
    assert float(ours.total.detach()) == pytest.approx(float((ours.dice + ours.focal).detach()), rel=1e-12)


def test_beit_norms_biases_and_tables_are_not_decayed():
    model = timm.create_model("beit_base_patch16_224", pretrained=False, embed_dim=32, depth=2, num_heads=2,
                              num_classes=0)
    exempt = set(no_decay_names(model))
    for name in ("cls_token", "blocks.0.norm1.weight", "blocks.0.norm2.bias", "blocks.1.gamma_1", "blocks.1.gamma_2",
                 "blocks.0.attn.q_bias", "blocks.0.attn.v_bias", "blocks.0.attn.relative_position_bias_table",
                 "patch_embed.proj.bias"):
        assert name in exempt, name
    for name in ("blocks.0.attn.qkv.weight", "blocks.0.mlp.fc1.weight", "patch_embed.proj.weight"):
        assert name not in exempt, name
    decay, no_decay = parameter_groups(model, 0.05)
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_schedule_warms_up_linearly_then_decays_to_zero():
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=1.0)
    scheduler = make_scheduler(optimizer, "warmup_linear", warmup_steps=4, total_steps=12)
    rates = []
    for _ in range(12):
        rates.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    assert rates[:5] == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0])
    assert rates[4:] == pytest.approx([(12 - s) / 8 for s in range(4, 12)])


def test_splits_are_seeded_disjoint_made_once_and_editable(tmp_path):
    ids = [f"case_{i:02d}" for i in range(12)]
    splits = make_splits(ids)
    assert splits == make_splits(list(reversed(ids)))
    assert sorted(v for s in splits for v in s["val"]) == ids
    assert all(not set(s["train"]) & set(s["val"]) and len(s["train"]) + len(s["val"]) == 12 for s in splits)
    written = load_or_create_splits(tmp_path, ids)
    edited = [{"train": ids[1:], "val": ids[:1]}] + written[1:]
    (tmp_path / "splits_final.json").write_text(json.dumps(edited))
    assert load_or_create_splits(tmp_path, ids)[0]["val"] == ["case_00"]
    assert fold_cases("all", [], ids) == (ids, [])
    with pytest.raises(TranssegError, match="fold 7 does not exist"):
        fold_cases(7, edited, ids)
    with pytest.raises(TranssegError, match="at least 5 training cases"):
        make_splits(ids[:3])


@pytest.mark.parametrize("text,expected", [("fold0", 0), ("3", 3), ("fold_4", 4), ("all", "all"), ("ALL", "all")])
def test_fold_names(text, expected):
    assert parse_fold(text) == expected


def test_fold_names_rejected():
    with pytest.raises(TranssegError, match="fold 'foldx'"):
        parse_fold("foldx")


def _plans() -> Plans:
    data = DataPlan(None, 0, [1.0, 1.0], None, [64, 64], normalization=[ChannelNormalization("ct", clip=[-100.0, 200.0])])
    return Plans("Dataset099_Example", data)


def test_overrides_change_any_field_and_are_checked():
    plans, applied = apply_overrides(_plans(), ["training.learning_rate=1e-4", "training.augmentation.zoom_range=[0.8,1.25]",
                                                "model.backbone=vit_small_patch16_224", "data.window_slices=3"])
    assert plans.training.learning_rate == 1e-4 and plans.training.augmentation.zoom_range == [0.8, 1.25]
    assert plans.model.backbone == "vit_small_patch16_224" and plans.data.window_slices == 3
    assert applied[0] == "training.learning_rate = 0.0001"
    with pytest.raises(TranssegError, match="no field 'learning_rat' in 'training'"):
        apply_overrides(_plans(), ["training.learning_rat=1"])
    with pytest.raises(TranssegError, match="data.in_plane_spacing was used by preprocessing"):
        apply_overrides(_plans(), ["data.in_plane_spacing=[2,2]"])
    with pytest.raises(TranssegError, match="SECTION.FIELD=VALUE"):
        apply_overrides(_plans(), ["training.steps"])


def test_a_pretrained_file_switches_pretraining_back_on_unless_random_init_is_asked():
    planned_without, _ = apply_overrides(_plans(), ["model.pretrained=null"])
    plans, _ = apply_overrides(planned_without, ['model.pretrained_file="w.pth"'])
    assert plans.model.pretrained == "timm" and plans.model.pretrained_file == "w.pth"
    plans, _ = apply_overrides(_plans(), ['model.pretrained_file="w.pth"', "model.pretrained=null"])
    assert plans.model.pretrained is None


@pytest.mark.parametrize("global_batch,planned,world,expected", [(16, 16, 1, (16, 1)), (16, 4, 1, (4, 4)),
                                                                 (16, 16, 2, (8, 1)), (16, 3, 2, (2, 4)),
                                                                 (4, 4, 2, (2, 1))])
def test_batch_plan_reaches_the_global_batch(global_batch, planned, world, expected):
    plan = batch_plan(global_batch, planned, world)
    assert (plan.per_gpu_batch, plan.accumulation) == expected
    assert plan.per_gpu_batch * plan.accumulation * world == global_batch


def test_batch_plan_rejects_an_indivisible_global_batch():
    with pytest.raises(TranssegError, match="not divisible by the 3 processes"):
        batch_plan(16, 4, 3)
