"""SimCC decode, the flip test and batching, on the project's own tiny stand-ins."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from predictors.common.dwpose import Wholebody
from predictors.common.dwpose.estimator import PoseEstimator, flip_simcc, make_crop, simcc_maximum, to_image
from predictors.common.dwpose.keypoints import FLIP_INDICES
from tools.tiny_weights import dwpose as part


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("dwpose")
    part.write_detector(root / "det.onnx")
    part.write_pose_model(root / "dynamic.onnx", dynamic_batch=True)
    part.write_pose_model(root / "fixed.onnx", dynamic_batch=False)
    return root


class CountingSession:
    """Wraps a real session and records the batch size of every call."""

    def __init__(self, path):
        self.inner = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        self.batches = []

    def get_inputs(self):
        return self.inner.get_inputs()

    def run(self, names, feeds):
        self.batches.append(next(iter(feeds.values())).shape[0])
        return self.inner.run(names, feeds)


def test_simcc_maximum_min_score_and_hidden_location():
    simcc_x = np.zeros((1, 3, 576), np.float32)
    simcc_y = np.zeros((1, 3, 768), np.float32)
    simcc_x[0, 0, 100], simcc_y[0, 0, 50] = 0.9, 0.4
    simcc_x[0, 1, 10], simcc_y[0, 1, 20] = 0.3, 0.7
    locs, scores = simcc_maximum(simcc_x, simcc_y)
    np.testing.assert_array_equal(scores[0], np.float32([0.4, 0.3, 0.0]))
    np.testing.assert_array_equal(locs[0], [[100, 50], [10, 20], [-1, -1]])


def test_crop_round_trip_maps_back_to_the_image():
    image = np.zeros((300, 200, 3), np.uint8)
    image[120, 70] = 255
    crop = make_crop(image, np.array([40.0, 60.0, 160.0, 260.0]), (288, 384))
    channel = crop.tensor[0]
    y, x = np.unravel_index(channel.argmax(), channel.shape)
    back = to_image(np.array([[x * 2.0, y * 2.0]]), crop, (288, 384))[0]
    assert np.abs(back - [70, 120]).max() < 1.5


def test_flip_indices_are_an_involution_swapping_sides():
    assert (FLIP_INDICES[FLIP_INDICES] == np.arange(133)).all()
    assert FLIP_INDICES[5] == 6 and FLIP_INDICES[17] == 20 and FLIP_INDICES[91] == 112
    assert FLIP_INDICES[23] == 39 and FLIP_INDICES[23 + 8] == 23 + 8  # jaw ends swap, chin stays


class MirrorSession:
    """A pose 'network' that sees which way the crop faces (the bright half of the test image is on the left
    of the original crop). On the original crop the left eye (1) peaks at x bin 100 with 0.9 and the left
    shoulder (5) is not seen. On the mirrored crop it reports the right eye (2) at bin 470 with 0.6 and the
    right shoulder (6) at bin 200 with 0.8. Every point peaks at y bin 300 with 0.9."""

    def get_inputs(self):
        return [type("Input", (), {"name": "input", "shape": ["batch", 3, 384, 288]})()]

    def run(self, _, feeds):
        crops = feeds["input"]
        simcc_x = np.zeros((len(crops), 133, 576), np.float32)
        simcc_y = np.zeros((len(crops), 133, 768), np.float32)
        simcc_y[:, :, 300] = 0.9
        for i, crop in enumerate(crops):
            if crop[0, 192, 100] < crop[0, 192, -100]:  # mirrored
                simcc_x[i, 2, 470] = 0.6
                simcc_x[i, 6, 200] = 0.8
            else:
                simcc_x[i, 1, 100] = 0.9
        return [simcc_x, simcc_y]


def test_flip_test_averages_with_the_mirrored_pass_swapping_sides_and_reversing_x():
    image = np.zeros((384, 288, 3), np.uint8)
    image[:, :144] = 255
    box = np.array([[0, 0, 288, 384]])
    estimator = PoseEstimator(MirrorSession())
    [(plain, plain_scores)] = estimator.estimate([(image, box)], flip=False)
    [(flipped, flipped_scores)] = estimator.estimate([(image, box)], flip=True)
    # Without the flip test only the original pass counts.
    assert plain_scores[0, 1] == pytest.approx(0.9) and plain_scores[0, 5] == 0
    # With it, each bin is the mean of both passes, the mirrored one with sides swapped and x reversed: the
    # left eye keeps bin 100 at half its score (the mirrored pass put its 0.6 at bin 575 - 470 = 105), and
    # the left shoulder appears at bin 575 - 200 = 375 with half of 0.8. Nothing lands on the right side.
    assert flipped_scores[0, 1] == pytest.approx(0.45) and flipped_scores[0, 5] == pytest.approx(0.4)
    assert flipped_scores[0, 2] == flipped_scores[0, 6] == 0
    assert flipped[0, 1, 0] == pytest.approx(plain[0, 1, 0])
    crop = make_crop(image, box[0], (288, 384))
    np.testing.assert_allclose(flipped[0, 5], to_image(np.array([[375.0, 300.0]]), crop, (288, 384))[0])
    x, y = flip_simcc(np.arange(2 * 133 * 576).reshape(2, 133, 576), np.zeros((2, 133, 768)))
    assert x[0, 1, 0] == 2 * 576 + 575 and x.shape == (2, 133, 576) and y.shape == (2, 133, 768)


def test_dynamic_batch_runs_all_crops_of_all_frames_at_once(models):
    images = [np.zeros((480, 640, 3), np.uint8), np.zeros((640, 360, 3), np.uint8)]
    boxes = [np.array([[10, 10, 200, 400], [300, 20, 500, 460]]), np.array([[0, 0, 360, 640]])]
    dynamic = PoseEstimator(CountingSession(models / "dynamic.onnx"))
    fixed = PoseEstimator(CountingSession(models / "fixed.onnx"))
    assert dynamic.dynamic and not fixed.dynamic
    got_dynamic = dynamic.estimate(list(zip(images, boxes, strict=True)))
    got_fixed = fixed.estimate(list(zip(images, boxes, strict=True)))
    assert dynamic.session.batches == [3]
    assert fixed.session.batches == [1, 1, 1]
    for (kd, sd), (kf, sf) in zip(got_dynamic, got_fixed, strict=True):
        np.testing.assert_array_equal(kd, kf)
        np.testing.assert_array_equal(sd, sf)
    assert [k.shape for k, _ in got_dynamic] == [(2, 133, 2), (1, 133, 2)]


def test_dynamic_batch_is_split_at_max_batch(models):
    estimator = PoseEstimator(CountingSession(models / "dynamic.onnx"), max_batch=2)
    image = np.zeros((200, 200, 3), np.uint8)
    estimator.estimate([(image, np.array([[0, 0, 100, 100]] * 5))], flip=True)
    assert estimator.session.batches == [2, 2, 2, 2, 2]  # 5 crops + 5 mirrored crops


def test_wholebody_falls_back_to_the_whole_image(tmp_path, models):
    part.write_detector(tmp_path / "nobody.onnx", people=())
    model = Wholebody(tmp_path / "nobody.onnx", models / "dynamic.onnx", rules="controlnet")
    result = model(np.zeros((400, 300, 3), np.uint8))
    assert len(result.detections.boxes) == 0
    assert result.keypoints.shape == (1, 133, 2)
    assert (result.keypoints[0, :17, 0] > 0).all() and (result.keypoints[0, :17, 0] < 300).all()


@pytest.mark.parametrize("rules", ["mmpose", "controlnet"])
def test_wholebody_batch_equals_one_by_one(models, rules):
    model = Wholebody(models / "det.onnx", models / "dynamic.onnx", rules=rules)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (360, 640, 3), dtype=np.uint8) for _ in range(3)]
    batched = model.batch(images)
    for image, result in zip(images, batched, strict=True):
        single = model(image)
        np.testing.assert_array_equal(single.keypoints, result.keypoints)
        np.testing.assert_allclose(single.detections.boxes, result.detections.boxes)
    pose = batched[0].pose(first_person_only=True)
    assert pose.subset.shape == (1, 18) and pose.hands.shape == (2, 21, 2)


@pytest.mark.parametrize(("rules", "crops_per_box"), [("mmpose", 2), ("controlnet", 1)])
def test_only_mmpose_rules_run_the_mirrored_crops(models, rules, crops_per_box):
    model = Wholebody(models / "det.onnx", models / "dynamic.onnx", rules=rules)
    model.estimator.session = CountingSession(models / "dynamic.onnx")
    image = np.random.default_rng(1).integers(0, 255, (360, 640, 3), dtype=np.uint8)
    (result,) = model.batch([image])
    boxes = max(1, len(result.detections.boxes))  # the whole image stands in when nobody is found
    assert model.estimator.session.batches == [crops_per_box * boxes]


def test_fixed_batch_larger_than_one_is_padded(models, tmp_path):
    import onnx

    model = onnx.load(str(models / "fixed.onnx"))
    for value in [*model.graph.input, *model.graph.output]:
        value.type.tensor_type.shape.dim[0].dim_value = 2
    onnx.save(model, str(tmp_path / "batch2.onnx"))
    image = np.zeros((300, 300, 3), np.uint8)
    boxes = np.array([[0, 0, 100, 200], [50, 50, 250, 290], [10, 100, 90, 280]])
    fixed = PoseEstimator(CountingSession(tmp_path / "batch2.onnx"))
    dynamic = PoseEstimator(CountingSession(models / "dynamic.onnx"))
    [(keypoints, scores)] = fixed.estimate([(image, boxes)])
    [(expected, expected_scores)] = dynamic.estimate([(image, boxes)])
    assert fixed.session.batches == [2, 2]
    np.testing.assert_array_equal(keypoints, expected)
    np.testing.assert_array_equal(scores, expected_scores)
