"""The model-info table: rows per slice count, and FLOP differences computed independently."""

import re
import sys

import pytest

from transseg.cli.model_info import main
from transseg.model.flops import format_table, model_info

ROW = re.compile(r"^\| (\d+) \| ([\d.]+) M \| ([\d.]+) M \| (\d+) \([\d.]+ G\) \| ([\d.]+) G \|$", re.M)
D, P = 192, 16  # vit_tiny: embedding width, patch size


def extra_patch_embedding_macs(slices, height, width, channels=1):
    """Going from 1 to K slices adds (K - 1) * C * P * P multiply-adds per output value of the embedding."""
    return (slices - 1) * channels * P * P * D * (height // P) * (width // P)


def test_cli_prints_one_row_per_slice_count(capsys):
    assert main(["--backbone", "vit_tiny_patch16_224", "--resolution", "64", "96", "--slices", "1", "5",
                 "--decoder_channels", "16"]) == 0
    out = capsys.readouterr().out
    rows = {int(m.group(1)): m for m in ROW.finditer(out)}
    assert sorted(rows) == [1, 5]
    extra = int(rows[5].group(4)) - int(rows[1].group(4))
    assert extra == 2 * extra_patch_embedding_macs(5, 64, 96)


def test_counts_match_independent_expectations():
    rows = model_info("vit_tiny_patch16_224", (64, 64), [1, 5], decoder_channels=16)
    one, five = rows
    assert (one.slices, five.slices) == (1, 5)
    assert five.encoder_flops_paper - one.encoder_flops_paper == 2 * extra_patch_embedding_macs(5, 64, 64)
    assert five.model_flops - one.model_flops == 2 * extra_patch_embedding_macs(5, 64, 64)
    assert five.encoder_params - one.encoder_params == D * 4 * P * P
    assert five.model_params - five.encoder_params == one.model_params - one.encoder_params > 0
    # the 2D encoder's count against a hand count of its matmuls (12 blocks, 16 patches + class token)
    tokens, blocks = 17, 12
    per_block = 12 * tokens * D * D + 2 * tokens * tokens * D  # qkv + proj + MLP(4x), then q@k and attn@v
    hand = 2 * (blocks * per_block + (tokens - 1) * D * P * P)
    assert abs(one.encoder_flops_paper - hand) / hand < 0.01


def test_missing_torchprofile_is_reported_not_fatal(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchprofile", None)  # import now raises ImportError
    rows = model_info("vit_tiny_patch16_224", (32, 32), [1], decoder_channels=8)
    assert rows[0].encoder_flops_paper is None and rows[0].model_flops > 0
    assert "install torchprofile" in format_table(rows)


def test_cli_rejects_unknown_backbone(capsys):
    assert main(["--backbone", "no_such_vit", "--slices", "1"]) == 1
    assert "unknown timm backbone" in capsys.readouterr().err


@pytest.mark.parametrize("argv,message", [
    (["--resolution", "60"], r"error: image size \(60, 60\) must be a multiple of the patch size \(16, 16\)"),
    (["--slices", "4"], r"error: invalid ModelConfig: slices must be a positive odd number .* got 4"),
])
def test_cli_rejects_invalid_configuration(argv, message, capsys):
    assert main(["--backbone", "vit_tiny_patch16_224", *argv]) == 1
    err = capsys.readouterr().err
    assert re.search(message, err) and "Traceback" not in err, err


def test_explicit_attention_is_the_same_maths_and_is_restored():
    import torch

    from transseg.model import ModelConfig, build_model
    from transseg.model.flops import explicit_attention

    model = build_model(ModelConfig(backbone="vit_tiny_patch16_224", pretrained=None, image_size=(32, 32),
                                    slices=3, decoder_channels=8)).eval()
    fused = [m for m in model.modules() if hasattr(m, "fused_attn")]
    assert fused
    for m in fused:
        m.fused_attn = True  # whatever TIMM_FUSED_ATTN says
    x = torch.randn(1, 1, 3, 32, 32)
    with torch.no_grad():
        reference = model(x)
        with explicit_attention(model):
            assert not any(m.fused_attn for m in fused)
            assert torch.allclose(model(x), reference, atol=1e-5)
    assert all(m.fused_attn for m in fused)
