"""The torch-free edge runtime: numpy NMS, no torch import, CLI on images and video, errors."""

from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import onnx
import pytest
import torch
from live_weights import square_crop
from torchvision.ops import batched_nms as tv_batched_nms
from torchvision.ops import nms as tv_nms
from yolo4.core.config import PreprocessConfig, Thresholds
from yolo4.core.nms import batched_nms, nms, select_detections
from yolo4.core.preprocess import ContractMismatch
from yolo4.detector.postprocess import postprocess
from yolo4.serving.runtime import EdgeDetector, EdgeModelError

ROOT = __import__("pathlib").Path(__file__).resolve().parent.parent


def random_boxes(rng: np.random.Generator, n: int) -> np.ndarray:
    xy = rng.uniform(0, 200, (n, 2))
    wh = rng.uniform(1, 60, (n, 2))
    return np.concatenate([xy, xy + wh], 1).astype(np.float32)


@pytest.mark.parametrize("seed", range(5))
def test_numpy_nms_matches_torchvision(seed):
    rng = np.random.default_rng(seed)
    boxes = random_boxes(rng, 300)
    scores = rng.uniform(0, 1, 300).astype(np.float32)
    classes = rng.integers(0, 4, 300)
    for iou in (0.3, 0.45, 0.7):
        expected = tv_nms(torch.from_numpy(boxes), torch.from_numpy(scores), iou).numpy()
        np.testing.assert_array_equal(nms(boxes, scores, iou), expected)
        expected = tv_batched_nms(torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(classes), iou)
        np.testing.assert_array_equal(batched_nms(boxes, scores, classes, iou), expected.numpy())
        # stopping after the first k kept keeps exactly the top k of the full result
        np.testing.assert_array_equal(batched_nms(boxes, scores, classes, iou, max_keep=7), expected.numpy()[:7])


def test_select_detections_matches_torch_postprocess():
    rng = np.random.default_rng(7)
    n, c = 500, 5
    pred = np.concatenate(
        [rng.uniform(20, 300, (n, 2)), rng.uniform(5, 80, (n, 2)), rng.uniform(0, 1, (n, 1 + c))], 1
    ).astype(np.float32)
    (boxes, scores, classes), = postprocess(torch.from_numpy(pred)[None], Thresholds(0.3, 0.45, 50))
    ours = select_detections(pred, Thresholds(0.3, 0.45, 50))
    assert len(ours[1]) == len(scores) == 50  # the cap is reached: order matters
    np.testing.assert_allclose(ours[0], boxes.numpy(), atol=1e-4)
    np.testing.assert_allclose(ours[1], scores.numpy(), rtol=1e-6)
    np.testing.assert_array_equal(ours[2], classes.numpy())
    assert select_detections(pred[:0], Thresholds(0.3, 0.45, 50))[0].shape == (0, 4)
    # multi-label: the same rules as torch
    (boxes, scores, classes), = postprocess(torch.from_numpy(pred)[None], Thresholds(0.2, 0.45, 80, multi_label=True))
    ours = select_detections(pred, Thresholds(0.2, 0.45, 80, multi_label=True))
    assert len(ours[1]) == 80 and len(set(ours[2].tolist())) > 1
    np.testing.assert_allclose(ours[1], scores.numpy(), rtol=1e-6)
    np.testing.assert_array_equal(ours[2], classes.numpy())


@pytest.fixture(scope="module")
def photos(images_dir):
    return [square_crop(cv2.imread(str(images_dir / f"{n}.jpg"))) for n in ("dog", "horses", "person")]


@pytest.fixture(scope="module")
def models(nano_onnx, nano_onnx_nms, tmp_path_factory):
    """A fixed-size decoded file and a dynamic in-graph-NMS file of one nano model. The fixed
    one is the dynamic export with its input pinned to (1, 3, 256, 256) (what a static export
    declares; ``yolo4 export`` without --dynamic is tested in test_export.py)."""
    model = onnx.load(str(nano_onnx))
    for dim, value in zip(model.graph.input[0].type.tensor_type.shape.dim, (1, 3, 256, 256)):
        dim.dim_value = value
    onnx.helper.set_model_props(model, {**{p.key: p.value for p in model.metadata_props}, "dynamic": "false"})
    plain = tmp_path_factory.mktemp("edge") / "plain.onnx"
    onnx.save(model, str(plain))
    return plain, nano_onnx_nms


def test_nms_in_graph_and_in_numpy_agree(models, photos):
    plain, with_nms = EdgeDetector(models[0]), EdgeDetector(models[1], num_threads=1)
    assert not plain.has_nms and with_nms.has_nms
    a, b = plain.detect_batch(photos), with_nms.detect_batch(photos)
    assert sum(len(d) for d in a) > 0
    for x, y, photo in zip(a, b, photos):
        assert len(x) == len(y) and x.image_size == y.image_size == photo.shape[:2]
        np.testing.assert_allclose(x.boxes, y.boxes, atol=0.05)
        np.testing.assert_allclose(x.scores, y.scores, atol=1e-5)
        np.testing.assert_array_equal(x.class_ids, y.class_ids)
        assert x.to_dict()["detections"][0].keys() == {"box", "score", "class_id", "label"}
    # A dynamic file runs at other sizes; a static one refuses them.
    assert EdgeDetector(models[1], input_size=(224, 224)).detect(photos[0]).image_size == photos[0].shape[:2]
    with pytest.raises(ValueError, match="re-export with --dynamic"):
        EdgeDetector(models[0], input_size=(224, 224))


def test_edge_runtime_and_cli_import_no_torch(models, images_dir, tmp_path):
    video = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10, (200, 150))
    frame = cv2.resize(cv2.imread(str(images_dir / "dog.jpg")), (200, 150))
    for i in range(5):
        writer.write(np.roll(frame, 4 * i, axis=1))
    writer.release()
    out = tmp_path / "out"
    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['torchvision'] = None\n"
        "import cv2\n"
        "from serving.runtime import EdgeDetector\n"
        "from yolo4.edge import main\n"
        f"d = EdgeDetector({str(models[1])!r})\n"
        f"print(len(d.detect(cv2.imread({str(images_dir / 'dog.jpg')!r}))))\n"
        f"sys.exit(main([{str(models[0])!r}, {str(images_dir)!r}, {str(video)!r}, '--out', {str(out)!r}]))\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "torch" not in run.stderr
    images = sorted(p.stem for p in images_dir.glob("*.jpg"))
    assert sorted(p.stem for p in out.glob("*.jpg")) == images
    dog = json.loads((out / "dog.json").read_text())
    assert dog["image_size"] == dict(zip(("height", "width"), cv2.imread(str(images_dir / "dog.jpg")).shape[:2]))
    clip = json.loads((out / "clip.json").read_text())
    assert [f["frame"] for f in clip["frames"]] == list(range(5))
    assert cv2.VideoCapture(str(out / "clip.mp4")).get(cv2.CAP_PROP_FRAME_COUNT) == 5


def test_bad_files_and_inputs_give_clear_errors(models, tmp_path):
    with pytest.raises(FileNotFoundError, match="no such model file"):
        EdgeDetector(tmp_path / "missing.onnx")
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07garbage" * 50)
    with pytest.raises(EdgeModelError, match="not a loadable ONNX model"):
        EdgeDetector(corrupt)
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(models[0].read_bytes()[:5000])
    with pytest.raises(EdgeModelError, match="not a loadable ONNX model"):
        EdgeDetector(truncated)
    foreign = tmp_path / "foreign.onnx"  # a valid ONNX model that is not ours
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3, 32, 32])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 3, 32, 32])
    graph = onnx.helper.make_graph([onnx.helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 18)]), str(foreign))
    with pytest.raises(EdgeModelError, match="not a yolo4 ONNX file"):
        EdgeDetector(foreign)

    detector = EdgeDetector(models[0])
    with pytest.raises(ContractMismatch, match="resize"):
        EdgeDetector(models[0], preprocess=PreprocessConfig(resize="stretch"))
    assert EdgeDetector(models[0], preprocess=detector.config.preprocess).contract == detector.config.preprocess
    with pytest.raises(ValueError, match="uint8"):
        detector.detect(np.zeros((50, 50, 3), np.float32))
    with pytest.raises(ValueError, match="shape"):
        detector.detect(np.zeros((50, 50, 5), np.uint8))
    with pytest.raises(ValueError, match="cannot read image"):
        detector.detect(str(corrupt))
    with pytest.raises(TypeError, match="list of images"):
        detector.detect_batch(np.zeros((50, 50, 3), np.uint8))
    assert detector.detect_batch([]) == []
