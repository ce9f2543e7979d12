"""ONNX export: dynamic shapes, parity with PyTorch, in-graph NMS, metadata, the CLI."""

from __future__ import annotations

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from conftest import LIVE_METRICS
from live_weights import live_model, match_detections, square_crop
from yolo4.core.config import Thresholds
from yolo4.core.onnx_metadata import parse_metadata
from yolo4.core.preprocess import preprocess_batch
from yolo4.detector.decode import DecodedModel
from yolo4.detector.export import export_onnx
from yolo4.detector.postprocess import postprocess
from yolo4.detector.predictor import Predictor
from yolo4.serving.quantize import find_mish_nodes
from yolo4.serving.runtime import EdgeDetector

BCCD = ("RBC", "WBC", "Platelets")


@pytest.fixture(scope="module")
def photos(images_dir):
    """Square crops of the sample photos (no letterbox padding: see live_weights)."""
    return [square_crop(cv2.imread(str(images_dir / f"{n}.jpg"))) for n in ("dog", "horses", "person", "giraffe")]


@pytest.fixture(scope="module")
def nano(live_nano):
    return live_nano


@pytest.fixture(scope="module")
def nano_dynamic(nano_onnx):
    return nano_onnx


@pytest.fixture(scope="module")
def nano_nms(nano_onnx_nms):
    return nano_onnx_nms


def session(path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def torch_decoded(model, config, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return DecodedModel(model, config).eval()(torch.from_numpy(x)).numpy()


def assert_decoded_close(onnx_out: np.ndarray, torch_out: np.ndarray, size: tuple[int, int]) -> float:
    """Max abs difference, boxes relative to the input size, scores as probabilities; <= 1e-3."""
    scale = np.array([size[1], size[0], size[1], size[0]], np.float32)
    diff = max(
        np.abs(onnx_out[..., :4] - torch_out[..., :4]).max() / scale.max(),
        np.abs(onnx_out[..., 4:] - torch_out[..., 4:]).max(),
    )
    assert diff <= 1e-3, diff
    return float(diff)


def test_dynamic_export_runs_any_batch_and_resolution(nano, nano_dynamic, photos):
    model, config = nano
    sess = session(nano_dynamic)
    dims = [d.dim_param or d.dim_value for d in onnx.load(str(nano_dynamic)).graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, "height", "width"]
    for size in ((192, 192), (288, 224)):  # neither is the export size; one is not square
        for batch in (1, 3, 8):
            images = [photos[i % len(photos)] for i in range(batch)]
            x, _ = preprocess_batch(images, size, config.preprocess)
            (out,) = sess.run(None, {"images": x})
            cells = sum(config.num_anchors * (size[0] // s) * (size[1] // s) for s in config.strides)
            assert out.shape == (batch, cells, 5 + config.num_classes)
            assert_decoded_close(out, torch_decoded(model, config, x), size)


def check_parity(model, config, path, photos) -> None:
    """Decoded outputs within 1e-3, and the edge runtime (numpy NMS) finds the same detections
    as the PyTorch ``Predictor``."""
    x, _ = preprocess_batch(photos, config.input_size, config.preprocess)
    onnx_out = np.concatenate([session(path).run(None, {"images": x[i : i + 1]})[0] for i in range(len(x))])
    assert_decoded_close(onnx_out, torch_decoded(model, config, x), config.input_size)
    edge = EdgeDetector(path)
    predictor = Predictor(model, config, device="cpu")
    found = 0
    for image in photos:
        ours, theirs = edge.detect(image), predictor(image)
        a = (ours.boxes, ours.scores, ours.class_ids)
        b = (theirs.boxes, theirs.scores, theirs.class_ids)
        assert len(ours) == len(theirs)
        assert match_detections(a, b, box_tol=0.05, score_tol=1e-4) == len(ours)
        assert ours.to_dict().keys() == theirs.to_dict().keys()
        assert ours.class_names == theirs.class_names
        found += len(ours)
    assert found > 0  # the comparison is not vacuous


def test_parity_nano(nano, nano_dynamic, photos):
    check_parity(*nano, nano_dynamic, photos)


@pytest.mark.parametrize("name, size", [("yolov4-tiny", 320), ("yolov4", 160)])
def test_parity_tiny_and_yolov4(name, size, photos, tmp_path):
    model, config = live_model(name, photos, size)
    path = export_onnx(model, config, tmp_path / f"{name}.onnx")
    check_parity(model, config, path, photos)
    proto = onnx.load(str(path))
    assert not any(n.op_type == "Mish" for n in proto.graph.node)  # yolov4's Mish is exported in its fast form
    assert bool(find_mish_nodes(proto)) == (config.backbone_act == "mish")


def test_in_graph_nms_equals_pytorch_postprocess(nano, nano_nms, photos):
    model, config = nano
    sess = session(nano_nms)
    x, _ = preprocess_batch(photos[:3], (224, 224), config.preprocess)
    decoded = torch.from_numpy(torch_decoded(model, config, x))
    fed = {"conf_threshold": np.array([0.5], np.float32), "iou_threshold": np.array([0.3], np.float32),
           "max_detections": np.array([4], np.int64)}  # fmt: skip
    runs = [({}, (0.3, 0.45, 300)), (fed, (0.5, 0.3, 4))]
    for overrides, (conf, iou, max_det) in runs:  # stored defaults, then thresholds fed at run time
        detections, counts = sess.run(["detections", "num_detections"], {"images": x, **overrides})
        expected = postprocess(decoded, Thresholds(conf, iou, max_det))
        assert detections.shape[0] == 3 and detections.shape[2] == 6 and detections.shape[1] <= max_det
        for rows, n, (boxes, scores, class_ids) in zip(detections, counts, expected):
            assert n == len(scores) > 0
            assert not rows[n:].any()  # padding rows are zeros
            assert np.all(np.diff(rows[:n, 4]) <= 0)  # by decreasing score
            got = (rows[:n, :4], rows[:n, 4], rows[:n, 5].astype(np.int64))
            assert match_detections(got, (boxes.numpy(), scores.numpy(), class_ids.numpy()), 1e-2, 1e-4) == n


def test_metadata_round_trip_and_single_file(nano, nano_nms):
    _, config = nano
    assert [p.name for p in nano_nms.parent.iterdir()] == ["nano-nms.onnx"]  # no external data file
    proto = onnx.load(str(nano_nms), load_external_data=False)
    onnx.checker.check_model(proto, full_check=True)
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer)
    assert proto.opset_import[0].version >= 17
    meta = parse_metadata({p.key: p.value for p in proto.metadata_props})
    assert meta.config == config
    assert meta.metrics == LIVE_METRICS and meta.precision == "fp32" and meta.has_nms and meta.dynamic
    assert meta.layout["box_format"] == "xyxy" and meta.layout["columns"][4:] == ["score", "class_id"]
    assert meta.props["source"] == "best.pt" and meta.props["variant"] == "yolov4-nano"
    assert meta.props["dataset"] == "bccd"
    from yolo4.detector.onnx_nms import add_nms

    with pytest.raises(ValueError, match="decoded outputs"):  # NMS is added once
        add_nms(nano_nms, nano_nms.with_name("twice.onnx"))
    with pytest.raises(ValueError, match="reserved|may not replace"):
        export_onnx(*nano, nano_nms.with_name("x.onnx"), extra_metadata={"config": "{}"})
    edge = EdgeDetector(nano_nms)
    assert edge.config == config and edge.has_nms and edge.precision == "fp32"
    assert edge.metadata["output"] == meta.layout and edge.metadata["metrics"] == LIVE_METRICS


def test_export_command(nano, tmp_path, capsys):
    from yolo4.detector.checkpoint import save_checkpoint

    from yolo4.cli import main

    model, config = nano
    save_checkpoint(tmp_path / "m.pt", model, config, metrics={"mAP50": 0.5})
    out = tmp_path / "m.onnx"
    assert main(["export", "--weights", str(tmp_path / "m.pt"), "--img", "160", "--nms", "--out", str(out)]) == 0
    edge = EdgeDetector(out)
    assert edge.input_size == (160, 160) and edge.has_nms
    assert edge.metadata["metrics"] == {"mAP50": 0.5} and edge.metadata["source"] == str(tmp_path / "m.pt")
    with pytest.raises(SystemExit) as exit:  # argparse's usage error, naming the rule
        main(["export", "--weights", str(tmp_path / "m.pt"), "--img", "100", "--out", str(out)])
    assert exit.value.code == 2 and "multiple of 32" in capsys.readouterr().err
    assert main(["export", "--weights", str(tmp_path / "m.pt"), "--img", "160x96", "--out", str(out)]) == 0
    assert EdgeDetector(out).input_size == (96, 160)  # WIDTHxHEIGHT, as image sizes are written
