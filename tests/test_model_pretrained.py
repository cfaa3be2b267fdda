"""Pre-trained weights really arrive: files in several formats and namings, resizing, the report."""

import argparse
import contextlib

import pytest
import timm
import torch
from safetensors.torch import save_file
from timm.models import beit as timm_beit
from timm.models import vision_transformer as timm_vit

from transseg.model import ModelConfig, PretrainedWeightsUnavailable, build_model

VIT = dict(backbone="vit_tiny_patch16_224", image_size=(64, 64), slices=5, decoder_channels=16, drop_path_rate=0.0)
BEIT_KW = dict(embed_dim=32, depth=2, num_heads=2)
SWIN_KW = dict(embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 2, 2, 4))
TOL = dict(rtol=1e-9, atol=1e-10)


@contextlib.contextmanager
def float64():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def build(**kw):
    with float64():
        return build_model(ModelConfig(**kw)).eval()


@pytest.fixture(scope="module")
def vit_saved(tmp_path_factory):
    torch.manual_seed(0)
    state = {k: v.double() for k, v in timm.create_model("vit_tiny_patch16_224").state_dict().items()}
    path = tmp_path_factory.mktemp("vit") / "vit_tiny.pth"
    torch.save(state, path)
    return path, state


def encoder_state(model):
    return model.encoder.backbone.state_dict()


def assert_blocks_match(model, saved):
    mine = encoder_state(model)
    block_keys = [k for k in saved if k.startswith("blocks.")]
    assert len(block_keys) == 12 * 12
    for key in block_keys + ["cls_token"]:
        assert torch.equal(mine[key], saved[key]), key


def test_pth_file_every_block_arrives_and_embedding_is_inflated(vit_saved):
    path, saved = vit_saved
    model = build(**VIT, pretrained_file=str(path))
    assert_blocks_match(model, saved)
    w = saved["patch_embed.proj.weight"]  # (192, 3, 16, 16)
    expected = torch.zeros(192, 1, 5, 16, 16, dtype=w.dtype)
    expected[:, 0, 2] = w[:, 0] + w[:, 1] + w[:, 2]
    assert torch.allclose(encoder_state(model)["patch_embed.proj.weight"], expected, rtol=0, atol=1e-15)
    assert torch.equal(encoder_state(model)["patch_embed.proj.bias"], saved["patch_embed.proj.bias"])
    report = model.pretrained_report
    assert report.source == str(path)
    assert report.inflated == ["patch_embed.proj.weight"] and report.resized == ["pos_embed"]
    assert report.random_init == []
    assert {"head.weight", "norm.weight"} <= set(report.unexpected)
    # the position embedding is resized exactly as timm resizes it for a 64 px model
    reference = timm.create_model("vit_tiny_patch16_224", img_size=64)
    expected_pos = timm_vit.checkpoint_filter_fn(saved, reference)["pos_embed"]
    assert torch.equal(encoder_state(model)["pos_embed"], expected_pos)


def test_2d_encoder_equals_timm_on_a_grey_image(vit_saved):
    """K=1, C=1: our encoder on a slice == timm's pre-trained ViT on that slice copied to R, G and B."""
    path, saved = vit_saved
    model = build(**{**VIT, "slices": 1}, pretrained_file=str(path))
    with float64():
        reference = timm.create_model("vit_tiny_patch16_224", img_size=64).eval()
    reference.load_state_dict(timm_vit.checkpoint_filter_fn(saved, reference))
    x = torch.randn(2, 1, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        expected = reference.forward_intermediates(x.expand(-1, 3, -1, -1), indices=[3, 5, 7, 11],
                                                   intermediates_only=True)
        got = model.encoder(x[:, :, None])
    for g, e in zip(got, expected):
        assert g.shape == (2, 192, 4, 4)
        assert torch.allclose(g, e, **TOL)


def test_safetensors_file(vit_saved, tmp_path):
    _, saved = vit_saved
    path = tmp_path / "vit_tiny.safetensors"
    save_file({k: v.contiguous() for k, v in saved.items()}, str(path))
    assert_blocks_match(build(**VIT, pretrained_file=str(path)), saved)


def test_wrapped_and_prefixed_checkpoint(vit_saved, tmp_path):
    _, saved = vit_saved
    path = tmp_path / "wrapped.pth"
    torch.save({"epoch": 7, "state_dict": {f"module.backbone.{k}": v for k, v in saved.items()}}, path)
    model = build(**VIT, pretrained_file=str(path))
    assert_blocks_match(model, saved)
    assert model.pretrained_report.random_init == []


def test_beit_relative_position_bias_resized_like_timm(tmp_path):
    torch.manual_seed(0)
    saved = {k: v.double() for k, v in timm.create_model("beit_base_patch16_224", **BEIT_KW).state_dict().items()}
    path = tmp_path / "beit_tiny.bin"
    torch.save({"model": saved}, path)  # original BEiT releases wrap the weights in "model"
    model = build(backbone="beit_base_patch16_224", backbone_kwargs=BEIT_KW, image_size=(96, 64), slices=1,
                  decoder_channels=16, pretrained_file=str(path), drop_path_rate=0.0)
    report = model.pretrained_report
    tables = ["blocks.0.attn.relative_position_bias_table", "blocks.1.attn.relative_position_bias_table"]
    assert sorted(report.resized) == tables and report.random_init == []
    with float64():
        reference = timm.create_model("beit_base_patch16_224", img_size=(96, 64), **BEIT_KW).eval()
    reference.load_state_dict(timm_beit.checkpoint_filter_fn(saved, reference))
    for key in tables:
        assert encoder_state(model)[key].shape == reference.state_dict()[key].shape != saved[key].shape
        assert torch.allclose(encoder_state(model)[key], reference.state_dict()[key], **TOL)
    # and the 2D encoder then computes exactly what timm's resized BEiT computes on a grey image
    x = torch.randn(1, 1, 96, 64, dtype=torch.float64)
    with torch.no_grad():
        expected = reference.forward_intermediates(x.expand(-1, 3, -1, -1), indices=[0, 1], intermediates_only=True)
        got = model.encoder(x[:, :, None])
    assert torch.allclose(got[0], expected[0], **TOL) and torch.allclose(got[3], expected[1], **TOL)


def test_beit_shared_relative_position_bias_goes_to_every_block(tmp_path):
    torch.manual_seed(0)
    source = timm.create_model("beit_base_patch16_224", use_rel_pos_bias=False, use_shared_rel_pos_bias=True,
                               **BEIT_KW)
    saved = source.state_dict()
    path = tmp_path / "beit_pretrain.pth"
    torch.save(saved, path)
    model = build(backbone="beit_base_patch16_224", backbone_kwargs=BEIT_KW, image_size=(224, 224), slices=1,
                  decoder_channels=8, pretrained_file=str(path))
    shared = saved["rel_pos_bias.relative_position_bias_table"]
    for block in range(2):
        table = encoder_state(model)[f"blocks.{block}.attn.relative_position_bias_table"]
        assert torch.equal(table, shared.double())
    assert model.pretrained_report.random_init == []


def test_swin_original_release_names(tmp_path):
    torch.manual_seed(0)
    saved = timm.create_model("swin_tiny_patch4_window7_224", **SWIN_KW).state_dict()
    original = {}  # original Swin: downsample at the end of stage i, not the start of stage i + 1
    for key, value in saved.items():
        if key.startswith("layers.") and ".downsample." in key:
            stage = int(key.split(".")[1])
            key = key.replace(f"layers.{stage}.downsample", f"layers.{stage - 1}.downsample", 1)
        original[key] = value
    original["layers.0.blocks.0.attn.relative_position_index"] = torch.zeros(49, 49, dtype=torch.long)
    assert "layers.0.downsample.reduction.weight" in original
    path = tmp_path / "swin_original.pth"
    torch.save({"model": original}, path)
    model = build(backbone="swin_tiny_patch4_window7_224", backbone_kwargs=SWIN_KW, image_size=(128, 128),
                  slices=3, decoder_channels=8, pretrained_file=str(path))
    report = model.pretrained_report
    assert report.random_init == [] and report.inflated == ["patch_embed.proj.weight"]
    assert all(not k.startswith("layers.") for k in report.unexpected)
    mine = encoder_state(model)
    for key in ("layers.1.downsample.reduction.weight", "layers.3.downsample.norm.weight", "patch_embed.norm.weight"):
        assert torch.equal(mine[key], saved[key].double()), key
    with torch.no_grad():
        assert model(torch.randn(1, 1, 3, 128, 128, dtype=torch.float64)).shape == (1, 2, 128, 128)


def test_none_inflation_and_no_pretraining(vit_saved):
    path, saved = vit_saved
    model = build(**VIT, pretrained_file=str(path), inflation="none")
    assert model.pretrained_report.random_init == ["patch_embed.proj.weight"]
    assert torch.count_nonzero(encoder_state(model)["patch_embed.proj.weight"][:, :, [0, 1, 3, 4]]) > 0
    assert_blocks_match(model, saved)
    scratch = build(**VIT, pretrained=None, pretrained_file=str(path))  # "w/o T" wins over the file
    assert scratch.pretrained_report is None
    assert not torch.equal(encoder_state(scratch)["blocks.0.attn.qkv.weight"], saved["blocks.0.attn.qkv.weight"])


def test_timm_source_uses_timm_weights(vit_saved, monkeypatch):
    _, saved = vit_saved
    real_create = timm.create_model

    def fake_create(name, pretrained=False, **kwargs):
        model = real_create(name, pretrained=False, **kwargs)
        if pretrained:  # stands in for the download
            assert name == "vit_tiny_patch16_224.augreg_in21k"
            model.load_state_dict({k: v for k, v in saved.items() if not k.startswith("head.")})
        return model

    monkeypatch.setattr(timm, "create_model", fake_create)
    model = build(**VIT, pretrained="timm:vit_tiny_patch16_224.augreg_in21k")
    assert model.pretrained_report.source == "timm:vit_tiny_patch16_224.augreg_in21k"
    assert_blocks_match(model, saved)


def test_offline_without_file_says_how_to_supply_one(monkeypatch):
    real_create = timm.create_model

    def offline_create(name, pretrained=False, **kwargs):
        if pretrained:
            raise OSError("We couldn't connect to 'https://huggingface.co'")
        return real_create(name, pretrained=False, **kwargs)

    monkeypatch.setattr(timm, "create_model", offline_create)
    with pytest.raises(PretrainedWeightsUnavailable, match="pretrained_file") as info:
        build_model(ModelConfig(**VIT, pretrained="timm"))
    assert "vit_tiny_patch16_224" in str(info.value) and "couldn't connect" in str(info.value)


def test_bad_files_give_clear_errors(vit_saved, tmp_path):
    _, saved = vit_saved
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_model(ModelConfig(**VIT, pretrained_file=str(tmp_path / "missing.pth")))
    pickled = tmp_path / "with_args.pth"
    torch.save({"model": saved, "args": argparse.Namespace(lr=1.0)}, pickled)
    with pytest.raises(ValueError, match="weights_only"):
        build_model(ModelConfig(**VIT, pretrained_file=str(pickled)))
    small = tmp_path / "vit_small.pth"
    torch.save(timm.create_model("vit_small_patch16_224", depth=1).state_dict(), small)
    with pytest.raises(ValueError, match="does not fit backbone 'vit_tiny_patch16_224'.*blocks.0.attn.qkv.weight"):
        build_model(ModelConfig(**VIT, pretrained_file=str(small)))
    unrelated = tmp_path / "unrelated.pth"
    torch.save({"foo.weight": torch.zeros(3)}, unrelated)
    with pytest.raises(ValueError, match="none of its keys match"):
        build_model(ModelConfig(**VIT, pretrained_file=str(unrelated)))
