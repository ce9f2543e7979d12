"""INT8 / FP16: the decode tail stays float, the files run and shrink, detections stay close."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from conftest import shared_path
from live_weights import make_live, square_crop
from yolo4.core.nms import box_iou_one_to_many
from yolo4.core.onnx_metadata import parse_metadata
from yolo4.core.presets import preset
from yolo4.detector.export import export_onnx
from yolo4.detector.model import build_model
from yolo4.serving.quantize import (
    calibration_inputs,
    convert_fp16,
    find_float_region,
    find_mish_nodes,
    name_nodes,
    quantize_int8,
)  # fmt: skip
from yolo4.serving.runtime import EdgeDetector

DECODE_OPS = {"Sigmoid", "Exp", "CumSum", "NonMaxSuppression", "TopK"}  # CumSum: grids of --dynamic files


@pytest.fixture(scope="module")
def bccd_images():
    folder = shared_path("datasets", "bccd", "JPEGImages")
    return sorted(folder.glob("*.jpg"))


@pytest.fixture(scope="module")
def fp32(nano_onnx_nms):
    """The live nano with in-graph NMS (so the NMS part must be found and kept in float too)."""
    return nano_onnx_nms


@pytest.fixture(scope="module")
def int8(fp32, bccd_images, tmp_path_factory):
    config = EdgeDetector(fp32).config
    out = tmp_path_factory.mktemp("q") / "int8.onnx"
    region = quantize_int8(fp32, out, calibration_inputs(bccd_images[8:40], config))
    return out, region


def ops_by_name(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {n.name: n for n in model.graph.node}


def test_float_region_is_the_decode_tail(fp32):
    model = onnx.load(str(fp32))
    name_nodes(model)
    region = find_float_region(model)
    nodes = ops_by_name(model)
    assert len(region.head_convs) == 3 and all(nodes[n].op_type == "Conv" for n in region.head_convs)
    tail_ops = {nodes[n].op_type for n in region.tail}
    assert {"Sigmoid", "Exp", "NonMaxSuppression", "TopK"} <= tail_ops and "Conv" not in tail_ops
    # every decode op of the graph is in the tail, and so are the producers of the outputs
    assert {n.name for n in model.graph.node if n.op_type in DECODE_OPS} <= set(region.tail)
    outputs = {o.name for o in model.graph.output}
    assert {n.name for n in model.graph.node if set(n.output) & outputs} <= set(region.tail)
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    assert len(convs) > 50 and all(n.name not in region.tail for n in convs)


def test_int8_runs_is_smaller_and_keeps_the_decode_float(fp32, int8):
    path, region = int8
    assert path.stat().st_size < 0.4 * fp32.stat().st_size
    model = onnx.load(str(path))
    meta = parse_metadata({p.key: p.value for p in model.metadata_props})
    assert meta.precision == "int8" and meta.config == parse_metadata(
        {p.key: p.value for p in onnx.load(str(fp32)).metadata_props}).config  # fmt: skip
    producers = {o: n for n in model.graph.node for o in n.output}
    qdq = {"QuantizeLinear", "DequantizeLinear"}
    assert sum(n.op_type == "QuantizeLinear" for n in model.graph.node) > 50
    # Graph analysis again, on the INT8 graph: downstream of the head convs, nothing is quantized.
    again = find_float_region(model)
    nodes = ops_by_name(model)
    assert not {nodes[n].op_type for n in again.tail} & qdq
    for conv in again.head_convs:  # float weights, not dequantized int8
        weight = nodes[conv].input[1]
        assert weight not in producers and any(t.name == weight and t.data_type == onnx.TensorProto.FLOAT
                                               for t in model.graph.initializer)  # fmt: skip
    for node in model.graph.node:
        if node.op_type in DECODE_OPS:
            assert all(producers.get(i) is None or producers[i].op_type not in qdq for i in node.input)
    # the backbone convolutions do run on quantized weights
    body_convs = [n for n in model.graph.node if n.op_type == "Conv" and n.name not in again.head_convs]
    assert all(producers[n.input[1]].op_type == "DequantizeLinear" for n in body_convs)


def test_int8_detections_overlap_fp32(fp32, int8, bccd_images):
    """Easy case: live weights, square crops of BCCD val images. Every confident FP32 box
    should have an INT8 box of the same class at IoU >= 0.5 (90% allowed: 8-bit noise)."""
    a, b = EdgeDetector(fp32), EdgeDetector(int8[0])
    assert b.precision == "int8" and b.has_nms
    confident = matched = 0
    for path in bccd_images[-4:]:
        image = square_crop(cv2.imread(str(path)))
        x, y = a.detect(image), b.detect(image)
        for box, score, cls in zip(x.boxes, x.scores, x.class_ids):
            if score < 0.5:
                continue
            confident += 1
            same = y.boxes[y.class_ids == cls]
            matched += bool(len(same)) and box_iou_one_to_many(box, same).max() >= 0.5
    assert confident >= 20
    assert matched >= 0.9 * confident, (matched, confident)


def test_mish_activations_stay_float_in_int8(bccd_images, tmp_path):
    crops = [square_crop(cv2.imread(str(p))) for p in bccd_images[:4]]
    config = preset("yolov4-nano", class_names=("RBC", "WBC", "Platelets"), act="mish").replace(input_size=(160, 160))
    model = make_live(build_model(config), config, crops, (160, 160))
    fp32 = export_onnx(model, config, tmp_path / "mish.onnx")
    islands = find_mish_nodes(onnx.load(str(fp32)))
    activations = sum(1 for m in model.modules() if type(m).__name__ == "Mish")
    assert len(islands) == 7 * activations > 0
    out = tmp_path / "mish-int8.onnx"
    quantize_int8(fp32, out, calibration_inputs(bccd_images[8:16], config))
    quantized = onnx.load(str(out))
    producers = {o: n for n in quantized.graph.node for o in n.output}
    exps = [n for n in quantized.graph.node if n.op_type == "Exp"]
    assert len(exps) >= activations
    for node in quantized.graph.node:  # inside the islands: float arithmetic, no Q/DQ
        if node.op_type in ("Exp", "Div"):
            assert all(i not in producers or producers[i].op_type != "DequantizeLinear" for i in node.input)
    consumers = {i for n in quantized.graph.node if n.op_type == "QuantizeLinear" for i in n.input}
    assert not {o for n in exps for o in n.output} & consumers
    EdgeDetector(out).detect(crops[0])


def test_fp16_runs_close_to_fp32_with_float32_decode(fp32, bccd_images, tmp_path):
    out = tmp_path / "fp16.onnx"
    convert_fp16(fp32, out)
    model = onnx.load(str(out))
    inits = {t.name: t.data_type for t in model.graph.initializer}
    conv_weights = [inits.get(n.input[1]) for n in model.graph.node if n.op_type == "Conv"]
    assert conv_weights.count(onnx.TensorProto.FLOAT16) > 50
    assert out.stat().st_size < 0.6 * fp32.stat().st_size
    a, b = EdgeDetector(fp32), EdgeDetector(out)
    assert b.precision == "fp16"
    image = square_crop(cv2.imread(str(bccd_images[-1])))
    x, y = a.detect(image), b.detect(image)
    assert len(x) > 0 and abs(len(x) - len(y)) <= 0.1 * len(x)
    ious = [box_iou_one_to_many(box, y.boxes[y.class_ids == c]).max(initial=0) for box, c in zip(x.boxes, x.class_ids)]
    assert np.mean(np.array(ious) >= 0.9) >= 0.9


def test_quantize_command(fp32, tmp_path, capsys, monkeypatch):
    from yolo4.core.cpu import describe_cpu
    from yolo4.serving import gate

    from yolo4.cli import main

    out = tmp_path / "int8.onnx"
    args = ["quantize", "--onnx", str(fp32), "--data", "bccd", "--calib-images", "8", "--eval-images", "8",
            "--runs", "3", "--out", str(out)]  # fmt: skip
    assert main(args + ["--max-map-drop", "100"]) == 0
    report = capsys.readouterr().out
    for line in ("mAP50 ", "mAP50-95", "latency ms", "file MB", "calibrated on 8 train images", describe_cpu()):
        assert line in report
    assert EdgeDetector(out).precision == "int8" and EdgeDetector(out).metadata["quantization"] == "u8s8-7bit"
    again = ["quantize", "--onnx", str(out), "--data", "bccd", "--out", str(tmp_path / "x.onnx")]
    assert main(again) == 2  # an INT8 input is refused

    # The gate, on by default, with the scores of a real drop (scoring replaced; the rest runs as is)
    class Scores:
        def __init__(self, map50):
            self.metrics = {"mAP50": map50, "mAP50-95": map50 / 2}

    fake = {fp32.name: Scores(0.80), out.name: Scores(0.785)}
    monkeypatch.setattr(gate, "score_file", lambda path, *a, **k: fake[Path(path).name])
    assert main(args + ["--max-map-drop", "2"]) == 0 and out.exists()
    assert main(args) == 1
    assert "INT8 loses 1.50 points of mAP50 on this CPU (limit 1.0)" in capsys.readouterr().err
    assert not out.exists()  # a refused file is not left behind


def test_quantize_refuses_a_class_mismatch_before_calibrating(fp32, tmp_path, capsys):
    from yolo4.cli import main

    out = tmp_path / "int8.onnx"
    assert main(["quantize", "--onnx", str(fp32), "--data", "coco-mini", "--out", str(out)]) == 2
    err = capsys.readouterr()
    assert "not the 80 categories" in err.err and "calibrate" not in err.err + err.out and not out.exists()


@pytest.mark.parametrize("fp32_ms, int8_ms, verdict", [(20.0, 10.0, "INT8 2.00x faster"), (19.0, 20.0, "INT8 1.05x slower than FP32")])
def test_the_report_says_slower_when_int8_is_slower(fp32_ms, int8_ms, verdict):
    from yolo4.core.coco import CocoScores
    from yolo4.serving.gate import GateReport, format_report

    def scores(map50):
        return CocoScores({"mAP50": map50, "mAP50-95": map50 / 2}, (), np.zeros(0), np.zeros(0), np.zeros(0), "")

    report = GateReport({"fp32": scores(0.8), "int8": scores(0.795)}, {"fp32": fp32_ms, "int8": int8_ms}, 2, "test CPU", 5)
    text = format_report(report)
    assert verdict in text and "CPU test CPU" in text
    assert report.map50_drop == pytest.approx(0.5) and report.passes() and not report.passes(max_drop=0.4)
