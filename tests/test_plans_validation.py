"""Plans.from_dict checks every field once, naming its path; the planner's options use the same rules."""
import copy
import json

import pytest

from transseg.model.config import PREDICT_MODES as MODEL_PREDICT_MODES
from transseg.model.inflation import DEPTH_INFLATIONS
from transseg.paths import TranssegError
from transseg.planning.planner import PlannerOptions, check_options, plan_experiment
from transseg.planning.plans import INFLATIONS, NORMALIZATION_SCHEMES, PREDICT_MODES, Plans
from transseg.preprocessing.normalization import WINDOWS

from test_planner import fingerprint


@pytest.fixture(scope="module")
def plans_dict():
    plans = plan_experiment(fingerprint([(2.0, 0.8, 0.8)], [(50, 96, 96)]),
                            PlannerOptions(backbone="vit_tiny_patch16_224", min_resolution=64))
    return json.loads(json.dumps(plans.to_dict()))


def refused(plans_dict, edit) -> str:
    broken = copy.deepcopy(plans_dict)
    edit(broken)
    with pytest.raises(TranssegError) as error:
        Plans.from_dict(broken, "my/plans.json")
    return str(error.value)


def test_the_planners_plans_load_and_json_numbers_are_converted(plans_dict):
    assert Plans.from_dict(plans_dict).to_dict() == plans_dict
    edited = copy.deepcopy(plans_dict)
    edited["training"]["steps"] = 1e4                     # 10000.0 from a --set or a hand edit
    edited["training"]["learning_rate"] = 1                # an int where a float is asked
    plans = Plans.from_dict(edited)
    assert plans.training.steps == 10000 and type(plans.training.steps) is int
    assert plans.training.learning_rate == 1.0 and type(plans.training.learning_rate) is float


@pytest.mark.parametrize("edit,message", [
    (lambda p: p["data"].update(window_slices=True), "data.window_slices: expected an odd int >= 1, got true"),
    (lambda p: p["data"].update(window_slices=2.5), "data.window_slices: expected an odd int >= 1, got 2.5"),
    (lambda p: p["data"].update(window_stride=0), "data.window_stride: expected an int >= 1, got 0"),
    (lambda p: p["data"].update(resolution=[96, "96"]), 'data.resolution: expected two values, each an int >= 1, '
                                                        'got [96, "96"]'),
    (lambda p: p["data"].update(in_plane_spacing=[0.8, -1]), "data.in_plane_spacing: expected two values, each a "
                                                             "number > 0, got [0.8, -1]"),
    (lambda p: p["data"].update(slice_spacing=0), "data.slice_spacing: expected a number > 0 or null, got 0"),
    (lambda p: p["data"].update(reorient_to="XYZ"), "data.reorient_to: expected an orientation code"),
    (lambda p: p["data"].update(label_values=[1, 2]), "data.label_values: expected a list of at least two distinct "
                                                      "ints, 0 (background) first, got [1, 2]"),
    (lambda p: p["data"].update(label_values=[0, 1, 1]), "data.label_values: expected"),
    (lambda p: p["data"].update(data_dtype="int8"),
     'data.data_dtype: expected one of "float16", "float32", got "int8"'),
    (lambda p: p["data"]["normalization"][0].update(scheme="zscore"), "data.normalization[0].scheme: expected one of"),
    (lambda p: p["data"]["normalization"][0].update(clip=[250, -175]), "data.normalization[0].clip: expected two "
                                                                       "values, each a number, the first < the second"),
    (lambda p: p["data"].update(normalization=[]), "data.normalization: expected a non-empty list"),
    (lambda p: p["model"].update(inflation="middle"), 'model.inflation: expected one of "center", "average", "none"'),
    (lambda p: p["model"].update(pretrained="imagenet"), 'model.pretrained: expected "timm", "timm:<timm model name>" '
                                                         'or null, got "imagenet"'),
    (lambda p: p["model"].update(drop_path_rate=1), "model.drop_path_rate: expected a number in [0, 1), got 1"),
    (lambda p: p["training"].update(seed=2 ** 32), "training.seed: expected an int in [0, 2**32 - 1]"),
    (lambda p: p["training"].update(loader_workers=-1), "training.loader_workers: expected an int >= 0 or null"),
    (lambda p: p["training"].update(val_every=0), "training.val_every: expected an int >= 1, got 0"),
    (lambda p: p["training"].update(validation_ema=1.0),
     "training.validation_ema: expected a number in [0, 1), got 1.0"),
    (lambda p: p["training"].update(num_folds=1), "training.num_folds: expected an int >= 2, got 1"),
    (lambda p: p["training"].update(gradient_clip=float("nan")), "training.gradient_clip: expected a number >= 0"),
    (lambda p: p["training"]["augmentation"].update(zoom_range=[0.5]), "training.augmentation.zoom_range: expected "
                                                                        "two values"),
    (lambda p: p["training"]["augmentation"].update(zoom_probability=-0.1), "zoom_probability: expected a number in"),
    (lambda p: p["training"]["augmentation"].update(rotation_degrees=270), "rotation_degrees: expected a number in "
                                                                            "[0, 180]"),
    (lambda p: p["training"].update(augmentation=None), "training.augmentation: expected an object, got null"),
    (lambda p: p["training"].update(optimizer=""), "training.optimizer: expected a non-empty string"),
    (lambda p: p["data"].pop("slice_axis"), "data: missing key(s) ['slice_axis']"),
    (lambda p: p["model"].update(backbone="vit_tiny_patch16_nosuchnet"), "model.backbone: timm has no model"),
    (lambda p: p["model"].update(pretrained="timm:nosuchnet"), "model.pretrained: timm has no model 'nosuchnet'"),
    (lambda p: p["data"].update(resolution=[96, 100]), "data.resolution: expected multiples of the patch size 16 of "
                                                       "vit_tiny_patch16_224, got [96, 100]"),
])
def test_each_field_is_checked_naming_its_path(plans_dict, edit, message):
    text = refused(plans_dict, edit)
    assert text.startswith("my/plans.json: ") and message in text, text


def test_not_an_object_and_top_level_problems(plans_dict):
    with pytest.raises(TranssegError, match="schema_version None"):
        Plans.from_dict([1, 2], "my/plans.json")
    assert "the top level: unknown key(s) ['extra']" in refused(plans_dict, lambda p: p.update(extra=1))
    assert "dataset_name: expected a non-empty string" in refused(plans_dict, lambda p: p.update(dataset_name=" "))


def test_allowed_names_match_the_registries_that_implement_them():
    assert set(NORMALIZATION_SCHEMES) == set(WINDOWS)
    assert set(INFLATIONS) == set(DEPTH_INFLATIONS)
    assert set(PREDICT_MODES) == set(MODEL_PREDICT_MODES)


@pytest.mark.parametrize("change,message", [
    ({"window_slices": 4}, "planner option window_slices: expected an odd int >= 1, got 4"),
    ({"window_stride": 0}, "planner option window_stride: expected an int >= 1, got 0"),
    ({"ct_clip": "auto"}, 'planner option ct_clip: expected one of "foreground", "paper", got "auto"'),
    ({"global_batch_size": 0}, "planner option global_batch_size: expected an int >= 1, got 0"),
    ({"backbone": "nosuchnet"}, "backbone 'nosuchnet': timm has no model 'nosuchnet'"),
])
def test_planner_options_are_checked_before_planning(change, message):
    options = PlannerOptions(**{"backbone": "vit_tiny_patch16_224", **change})
    with pytest.raises(TranssegError) as error:
        check_options(options)
    assert message in str(error.value)
    with pytest.raises(TranssegError, match=message.split(":")[0]):
        plan_experiment(fingerprint([(2.0, 0.8, 0.8)], [(50, 96, 96)]), options)
