"""Streaming a case into classes, slice axis resampled or not, equals restoring its full probabilities exactly."""
import numpy as np
import pytest
import torch

from conftest import require_real_data
from synthetic_model import make_model_folder, spine_plans
from transseg.dataset import CaseFiles
from transseg.inference.case import final_labels, stream_classes
from transseg.inference.in_memory import Predictor
from transseg.inference.inputs import preprocess_input
from transseg.inference.streaming import ClassMapStream
from transseg.preprocessing.resampling import argmax_of_resampled


@pytest.mark.parametrize("n_in, n_out", [(23, 23), (23, 9), (23, 50), (5, 4), (2, 7)])
def test_the_stream_equals_the_arg_max_of_the_whole_volume(n_in, n_out):
    rng = np.random.default_rng(n_in * 100 + n_out)
    scores = rng.random((4, n_in, 9, 11), dtype=np.float32).astype(np.float16)
    expected = argmax_of_resampled(enumerate(scores), (n_out, 13, 8), np.uint8)   # what restore_segmentation does
    for chunk in (1, 3, 8, n_in):
        stream, widest = ClassMapStream((n_out, 13, 8), n_in, 4), 0
        for z0 in range(0, n_in, chunk):
            stream.add(z0, min(n_in, z0 + chunk), scores[:, z0:z0 + chunk])
            widest = max(widest, 0 if stream.kept is None else stream.kept.shape[1])
        assert np.array_equal(stream.result(), expected), chunk
        assert widest <= chunk + 2 * max(1, n_in // n_out)          # a chunk and the taps' reach, not the case


def test_a_plan_that_resamples_the_slice_axis_streams_exactly(tmp_path):
    """The real spine CT planned at 2.1 mm slices (from 1.5): streamed classes, in the main thread or a worker,
    equal the classes restored from the kept float16 probabilities (upsampling: the test above)."""
    model = make_model_folder(tmp_path / "Dataset091_Spine" / "plans", spine_plans(slice_spacing=2.1),
                              {"0": 7})
    predictor = Predictor.from_model_folder(model, device="cpu", batch_size=5)
    source = require_real_data() / "sub-ct_label-22_ct.nii.gz"
    data, properties = preprocess_input(CaseFiles("spine", (source,)), predictor.model.plans.data)
    assert properties["shape_after_resampling"][0] != properties["shape_before_resampling"][0]
    kept = predictor.predict_preprocessed(data, properties, keep_probabilities=True)
    streamed = predictor.predict_preprocessed(data, properties)
    assert kept.classes is None and streamed.probabilities is None
    expected = final_labels(kept)
    assert len(np.unique(expected)) >= 2
    assert np.array_equal(final_labels(streamed), expected)
    threaded = stream_classes(predictor.models, data, properties, torch.device("cpu"), predictor.settings,
                              background=True)
    assert np.array_equal(threaded, streamed.classes)
