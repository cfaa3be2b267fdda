"""Exact proofs of the inflation properties on the whole network, shapes, gradients, config."""

import contextlib
import json

import pytest
import timm
import torch
import torch.nn.functional as F

from transseg.model import ModelConfig, build_model

PATCH_KEY = "encoder.backbone.patch_embed.proj.weight"
BASE = dict(backbone="vit_tiny_patch16_224", image_size=(64, 64), decoder_channels=16, num_classes=3,
            drop_path_rate=0.0)
TOL = dict(rtol=1e-9, atol=1e-10)


@pytest.fixture(scope="module")
def vit_file(tmp_path_factory):
    """A tiny timm ViT saved to disk stands in for downloaded pre-trained weights."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "vit_tiny.pth"
    torch.save(timm.create_model("vit_tiny_patch16_224", pretrained=False).state_dict(), path)
    return str(path)


@contextlib.contextmanager
def float64():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def build(vit_file, **overrides):
    """Build in float64 from the start, so the inflation arithmetic itself is float64 too."""
    with float64():
        return build_model(ModelConfig(**{**BASE, "pretrained_file": str(vit_file), **overrides})).eval()


def copy_all_but_patch_embed(src, dst):
    """Give dst the same (randomly initialised) decoder as src; only the inflated kernels differ."""
    state = {k: v for k, v in src.state_dict().items() if k != PATCH_KEY}
    result = dst.load_state_dict(state, strict=False)
    assert result.missing_keys == [PATCH_KEY] and not result.unexpected_keys


@pytest.fixture(scope="module", params=["grey", "rgb"])
def timm_2d(request, tmp_path_factory):
    """A plain timm ViT (64 px, float64, one input channel) and a file of 'pre-trained' 2D weights for it.

    grey: the file holds this very model's weights. rgb: it holds an RGB model's weights; the
    reference gets the kernel summed over R, G, B, which is the paper's channel rule (its own test
    is in test_model_inflation.py), so here too the 2D weights are the same on both sides.
    """
    torch.manual_seed(0)
    with float64():
        source = timm.create_model("vit_tiny_patch16_224", img_size=64, num_classes=0,
                                   in_chans=1 if request.param == "grey" else 3)
        reference = timm.create_model("vit_tiny_patch16_224", img_size=64, num_classes=0, in_chans=1).eval()
    state = source.state_dict()
    path = tmp_path_factory.mktemp("weights") / f"vit_tiny_{request.param}.pth"
    torch.save(state, path)
    summed = state["patch_embed.proj.weight"].sum(1, keepdim=True)
    reference.load_state_dict({**state, "patch_embed.proj.weight": summed})
    return reference, str(path)


def differences_to_timm(model, reference, window, centre):
    """Largest |ours - timm| over the four encoder feature maps, and over the logits (our decoder run on
    timm's features); ``window`` (B, 1, K, H, W) goes to our model, ``centre`` (B, 1, H, W) to timm."""
    with torch.no_grad():
        expected = reference.forward_intermediates(centre, indices=model.encoder.indices, intermediates_only=True)
        features = model.encoder(window)
        logits = F.interpolate(model.head(model.neck(expected)), size=model.config.image_size, mode="bilinear",
                               align_corners=False)
        feature_gap = max((a - b).abs().max().item() for a, b in zip(features, expected))
        return feature_gap, (model(window) - logits).abs().max().item(), expected, logits


def perturb_side_depths(model, value):
    """Add ``value`` to the patch kernel's non-centre depths (what a sloppy inflation would leave there)."""
    weight = model.encoder.backbone.patch_embed.proj.weight
    side = [d for d in range(weight.shape[2]) if d != weight.shape[2] // 2]
    with torch.no_grad():
        weight[:, :, side] += value


@pytest.mark.parametrize("slices", [3, 5])
def test_center_inflation_is_exactly_timm_on_the_centre_slice(timm_2d, slices):
    """Whatever the neighbours hold, features and logits are timm's on the centre slice, bit for bit."""
    reference, weights = timm_2d
    model = build(weights, slices=slices)
    torch.manual_seed(1)
    window = torch.randn(2, 1, slices, 64, 64, dtype=torch.float64) * 3    # neighbours are anything
    centre = window[:, :, slices // 2]
    feature_gap, logit_gap, features, logits = differences_to_timm(model, reference, window, centre)
    assert features[0].std() > 0.1 and logits.std() > 0
    assert feature_gap == 0.0 and logit_gap == 0.0

    perturb_side_depths(model, 1e-13)       # the proof must see a kernel that is only nearly centred
    feature_gap, logit_gap, _, _ = differences_to_timm(model, reference, window, centre)
    assert feature_gap > 0 and logit_gap > 0


@pytest.mark.parametrize("slices", [3, 5])
def test_average_inflation_of_identical_slices_is_timm_to_rounding(timm_2d, slices):
    """K identical slices through W/K on every depth: timm's answer up to float64 rounding (~1e-15)."""
    reference, weights = timm_2d
    model = build(weights, slices=slices, inflation="average")
    torch.manual_seed(2)
    centre = torch.randn(2, 1, 64, 64, dtype=torch.float64)
    window = centre[:, :, None].expand(-1, -1, slices, -1, -1).contiguous()
    feature_gap, logit_gap, features, logits = differences_to_timm(model, reference, window, centre)
    feature_scale = max(f.abs().max().item() for f in features)
    assert feature_gap <= 1e-14 * feature_scale and logit_gap <= 1e-14 * logits.abs().max().item()

    perturb_side_depths(model, 1e-13)
    feature_gap, logit_gap, _, _ = differences_to_timm(model, reference, window, centre)
    assert feature_gap > 1e-14 * feature_scale and logit_gap > 1e-14 * logits.abs().max().item()
    # and unlike centering, average inflation does see the neighbours
    other = window.clone()
    other[:, :, 0] = torch.randn_like(other[:, :, 0])
    assert differences_to_timm(model, reference, other, centre)[0] > 1e-6


def test_identical_channels_equal_one_channel_model(vit_file):
    model3, model1 = build(vit_file, slices=3, in_channels=3), build(vit_file, slices=3, in_channels=1)
    copy_all_but_patch_embed(model3, model1)
    torch.manual_seed(3)
    x = torch.randn(2, 1, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        assert torch.allclose(model3(x.expand(-1, 3, -1, -1, -1)), model1(x), **TOL)


def test_gradients_reach_zero_initialised_depths(vit_file):
    model = build(vit_file, slices=5).float()
    weight = model.encoder.backbone.patch_embed.proj.weight
    side = [0, 1, 3, 4]
    assert torch.count_nonzero(weight[:, :, side]) == 0
    torch.manual_seed(4)
    x = torch.randn(2, 1, 5, 64, 64)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model(x).square().mean().backward()
    for depth in side:
        assert weight.grad[:, :, depth].abs().sum() > 0, f"no gradient at depth {depth}"
    optimizer.step()
    for depth in side:
        assert torch.count_nonzero(weight[:, :, depth]) > 0, f"depth {depth} did not learn"


@pytest.mark.parametrize("size", [(64, 64), (96, 64), (80, 48)])
@pytest.mark.parametrize("predict", ["center", "all"])
def test_output_shapes(size, predict):
    model = build_model(ModelConfig(**{**BASE, "pretrained": None, "image_size": size, "slices": 3,
                                       "predict": predict})).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 1, 3, *size))
    expected = (2, 3, *size) if predict == "center" else (2, 3, 3, *size)
    assert out.shape == expected
    assert model.pretrained_report is None


def test_swin_native_stages_shape():
    config = ModelConfig(backbone="swin_tiny_patch4_window7_224", pretrained=None, image_size=(128, 96), slices=3,
                         in_channels=2, decoder_channels=16, num_classes=2,
                         backbone_kwargs=dict(embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 2, 2, 4)))
    model = build_model(config).eval()
    assert model.encoder.reductions == [4, 8, 16, 32]
    assert model.encoder.out_channels == [16, 32, 64, 128]
    with torch.no_grad():
        assert model(torch.randn(2, 2, 3, 128, 96)).shape == (2, 2, 128, 96)


def test_default_out_indices_and_custom_depths():
    model = build_model(ModelConfig(**{**BASE, "pretrained": None}))
    assert model.encoder.indices == [3, 5, 7, 11]
    model = build_model(ModelConfig(**{**BASE, "pretrained": None, "backbone_kwargs": {"depth": 24}}))
    assert model.encoder.indices == [7, 11, 15, 23]
    model = build_model(ModelConfig(**{**BASE, "pretrained": None, "out_indices": [1, 2, 3, 4]}))
    assert model.encoder.indices == [1, 2, 3, 4] and len(model.encoder.backbone.blocks) == 5  # pruned after 4


def test_wrong_input_shape_is_refused():
    model = build_model(ModelConfig(**{**BASE, "pretrained": None, "slices": 3}))
    with pytest.raises(ValueError, match=r"\(B, C, K, H, W\)"):
        model(torch.zeros(1, 1, 64, 64))
    with pytest.raises(ValueError, match="must be a multiple of the patch size"):
        build_model(ModelConfig(**{**BASE, "pretrained": None, "image_size": (60, 64)}))


def test_config_json_round_trip_and_validation():
    config = ModelConfig(backbone="vit_small_patch16_224", pretrained="timm:vit_small_patch16_224.dino",
                         pretrained_file="/w/dino.pth", in_channels=4, num_classes=5, image_size=(320, 240),
                         slices=3, inflation="average", decoder_channels=64, predict="all",
                         out_indices=[2, 5, 8, 11], drop_path_rate=0.2, backbone_kwargs={"depth": 12})
    restored = ModelConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert restored == config and restored.image_size == (320, 240)
    assert restored.timm_weights_name == "vit_small_patch16_224.dino"
    with pytest.raises(ValueError, match="unknown ModelConfig key.*'slice_count'"):
        ModelConfig.from_dict({**config.to_dict(), "slice_count": 5})
    for bad in ({"slices": 4}, {"inflation": "middle"}, {"predict": "edges"}, {"pretrained": "imagenet"},
                {"out_indices": [1, 2]}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            ModelConfig(**bad)
