"""Training windows: pure functions of (seed, step, slot), oversampling, and the one-resampling cut."""
import numpy as np
import pytest
import torch

from transseg.inference.window_spec import WindowSpec
from transseg.planning.plans import AugmentationPlan
from transseg.training.loader import BatchLayout, WindowBatches, training_cases
from transseg.training.sampling import (Augmentation, TrainingCase, WindowDraw, draw_window, forced_slots,
                                        rank_slots)
from transseg.training.windows import crop_centre, cut_window

CASES = [TrainingCase("a", 20, {1: [3, 4, 5], 2: []}), TrainingCase("b", 9, {1: [], 2: [7]})]


def test_a_draw_depends_only_on_seed_step_and_slot():
    plan = AugmentationPlan()
    first = [draw_window(0, step, slot, CASES, slot % 2 == 1, plan) for step in range(5) for slot in range(4)]
    again = [draw_window(0, step, slot, CASES, slot % 2 == 1, plan) for step in range(5) for slot in range(4)]
    assert first == again
    assert len({d for d in first}) == len(first)                       # every slot gets its own window
    assert draw_window(1, 0, 0, CASES, False, plan) != draw_window(0, 0, 0, CASES, False, plan)


def test_forced_draws_land_on_slices_listing_a_present_class():
    for step in range(200):
        draw = draw_window(3, step, 0, CASES, True, None)
        case = CASES[draw.case]
        assert draw.forced_class in (1, 2)
        assert case.class_slices[draw.forced_class], "a class absent from the case was forced"
        assert draw.centre in case.class_slices[draw.forced_class]


@pytest.mark.parametrize("batch,fraction,expected", [(16, 0.33, 5), (2, 0.33, 1), (4, 0.0, 0), (3, 1.0, 3)])
def test_oversampling_forces_a_rounded_share_spread_over_the_batch(batch, fraction, expected):
    slots = forced_slots(batch, fraction)
    assert len(slots) == expected
    if expected == 5:
        assert sorted(slots) == [3, 6, 9, 12, 15]


def test_ranks_and_micro_batches_partition_the_global_batch():
    world, per_gpu, accumulation = 2, 2, 3
    seen = [s for m in range(accumulation) for r in range(world) for s in rank_slots(m, r, world, per_gpu)]
    assert sorted(seen) == list(range(world * per_gpu * accumulation)) and len(set(seen)) == len(seen)


@pytest.fixture
def volume():
    rng = np.random.default_rng(0)
    data = rng.standard_normal((2, 30, 100, 90)).astype(np.float16)
    seg = (rng.random((30, 100, 90)) * 3).astype(np.uint8)
    return data, seg


def _identity_crop(data, seg, draw, spec):
    height, width = spec.resolution
    y0 = int(np.floor(crop_centre(data.shape[2], height, draw.position[0]) - height / 2 + 0.5))
    x0 = int(np.floor(crop_centre(data.shape[3], width, draw.position[1]) - width / 2 + 0.5))
    lo = draw.centre - spec.slices // 2
    return (data[:, lo:lo + spec.slices, y0:y0 + height, x0:x0 + width].astype(np.float32),
            seg[draw.centre, y0:y0 + height, x0:x0 + width])


def test_unaugmented_window_is_the_crop_itself(volume):
    data, seg = volume
    spec = WindowSpec(5, 1, (64, 48))
    draw = WindowDraw(0, 10, None, (0.3, 0.7), 0.0, Augmentation())
    image, target = cut_window(data, seg, draw, spec)
    expected_image, expected_target = _identity_crop(data, seg, draw, spec)
    assert image.shape == (2, 5, 64, 48) and target.dtype == torch.int64
    assert np.abs(image.numpy() - expected_image).max() < 1e-4
    assert np.array_equal(target.numpy(), expected_target)


def test_quarter_turns_and_flips_move_pixels_without_blending(volume):
    data, seg = volume
    spec = WindowSpec(5, 1, (64, 64))
    base = WindowDraw(0, 10, None, (0.3, 0.7), 0.0, Augmentation())
    image, target = cut_window(data, seg, base, spec)
    turned_image, turned = cut_window(data, seg, WindowDraw(0, 10, None, (0.3, 0.7), 0.0,
                                                             Augmentation(rotation_degrees=90.0)), spec)
    assert np.array_equal(torch.rot90(turned, 1, (0, 1)).numpy(), target.numpy()) or \
        np.array_equal(torch.rot90(turned, -1, (0, 1)).numpy(), target.numpy())
    flipped_image, flipped = cut_window(data, seg, WindowDraw(0, 10, None, (0.3, 0.7), 0.0,
                                                               Augmentation(flip_columns=True, flip_slices=True)), spec)
    assert np.array_equal(flipped.numpy(), target.flip(1).numpy())
    assert np.abs(flipped_image.numpy() - image.flip(1).flip(3).numpy()).max() < 1e-4
    shifted_image, _ = cut_window(data, seg, WindowDraw(0, 10, None, (0.3, 0.7), 0.0, Augmentation(intensity_shift=0.2)),
                                  spec)
    assert np.abs(shifted_image.numpy() - (image.numpy() + 0.2)).max() < 1e-4


def test_small_slices_are_padded_with_minus_one_and_background(volume):
    data, seg = volume
    spec = WindowSpec(3, 2, (128, 96))
    image, target = cut_window(data, seg, WindowDraw(0, 0, None, (0.5, 0.5), 0.0, Augmentation()), spec)
    assert image.shape == (2, 3, 128, 96)
    pad_y = (128 - 100) // 2
    assert torch.all(image[:, :, :pad_y - 1] == -1) and torch.all(target[:pad_y - 1] == 0)
    # the window at slice 0 with stride 2 is slices (0, 0, 2): the edge slice is repeated
    inner = image[:, :, pad_y + 5, 20].numpy()
    assert np.allclose(inner[:, 0], inner[:, 1]) and not np.allclose(inner[:, 1], inner[:, 2])


def test_zoom_scales_the_label_area(volume):
    _, seg = volume
    seg = np.zeros((9, 100, 100), np.uint8)
    seg[:, 30:70, 30:70] = 1
    data = np.zeros((1, 9, 100, 100), np.float16)
    spec = WindowSpec(1, 1, (100, 100))
    area = {z: float(cut_window(data, seg, WindowDraw(0, 4, None, (0.5, 0.5), 0.0, Augmentation(zoom=z)), spec)[1]
                     .float().mean()) for z in (0.5, 1.0, 2.0)}
    assert area[1.0] == pytest.approx(0.16, abs=0.01)
    assert area[0.5] == pytest.approx(0.04, abs=0.01) and area[2.0] == pytest.approx(0.64, abs=0.02)


def test_forced_windows_contain_their_class_after_augmentation(volume):
    data, _ = volume
    seg = np.zeros((30, 100, 90), np.uint8)
    seg[12, 80:83, 5:8] = 2                        # a tiny lesion near a corner
    case = [TrainingCase("c", 30, {1: [], 2: [12]})]
    spec = WindowSpec(5, 1, (48, 48))
    for step in range(40):
        draw = draw_window(0, step, 0, case, True, AugmentationPlan())
        _, target = cut_window(data, seg, draw, spec)
        assert (target == 2).any(), f"step {step}: forced lesion outside the crop ({draw})"


def test_one_process_and_two_ranks_see_the_same_global_batch(tmp_path, volume):
    from transseg.preprocessing import save_case
    data, seg = volume
    for name in ("x", "y"):
        save_case(tmp_path, name, data, seg, {"shape_after_resampling": list(seg.shape),
                                              "class_locations": {"1": [1, 2], "2": [5]}})
    cases = training_cases(tmp_path, ["x", "y"])
    spec = WindowSpec(5, 1, (32, 32))

    def items(layout):
        batches = WindowBatches(tmp_path, cases, spec, layout, augmentation=AugmentationPlan(), seed=0,
                                oversampling=0.5, first_step=3, steps=5)
        return [batches[i] for i in range(len(batches))]

    single = items(BatchLayout(4, 4))
    ranks = [items(BatchLayout(4, 2, world_size=2, rank=r)) for r in (0, 1)]
    assert [i["step"] for i in single] == [3, 4]
    for index, item in enumerate(single):
        joined = torch.cat([ranks[0][index]["image"], ranks[1][index]["image"]])
        assert torch.equal(item["image"], joined)
    accumulated = items(BatchLayout(4, 1, world_size=2, rank=1))    # 2 micro-batches of 1 on rank 1
    assert torch.equal(accumulated[0]["image"][0], single[0]["image"][1])
    assert torch.equal(accumulated[1]["image"][0], single[0]["image"][3])


WINDOWS_SCRIPT = """
import hashlib, json, sys
from pathlib import Path
from transseg.inference.window_spec import WindowSpec
from transseg.planning.plans import AugmentationPlan
from transseg.training.loader import BatchLayout, WindowBatches, training_cases

def hashes(folder, first_step):
    batches = WindowBatches(folder, training_cases(folder, ["x", "y"]), WindowSpec(5, 1, (32, 32)), BatchLayout(4, 2),
                            augmentation=AugmentationPlan(), seed=0, oversampling=0.5, first_step=first_step, steps=6)
    return [hashlib.sha256(b["image"].numpy().tobytes() + b["target"].numpy().tobytes()).hexdigest()
            for b in (batches[i] for i in range(len(batches)))]

if __name__ == "__main__":
    print(json.dumps({first: hashes(Path(sys.argv[1]), first) for first in (0, 3)}))
"""


def test_windows_are_the_same_in_another_process_and_after_a_resume(tmp_path, volume):
    """A fresh interpreter (another hash seed, another global RNG state) draws the windows this process
    draws, and a run starting at step 3 (a resumed one) draws what the first drew from step 3 on."""
    import json
    import os
    import subprocess
    import sys
    from transseg.preprocessing import save_case
    data, seg = volume
    for name in ("x", "y"):
        save_case(tmp_path, name, data, seg, {"shape_after_resampling": list(seg.shape),
                                              "class_locations": {"1": [1, 2], "2": [5]}})
    namespace = {}
    exec(compile(WINDOWS_SCRIPT, "windows", "exec"), namespace)
    here = namespace["hashes"](tmp_path, 0)
    assert len(here) == 12 and len(set(here)) == 12           # 6 steps x 2 micro-batches, all different
    result = subprocess.run([sys.executable, "-c", WINDOWS_SCRIPT, str(tmp_path)], capture_output=True, text=True,
                            env={**os.environ, "PYTHONHASHSEED": "12345"}, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    there = json.loads(result.stdout)
    assert there["0"] == here
    assert there["3"] == here[6:]                              # 2 micro-batches per step: step 3 is item 6
