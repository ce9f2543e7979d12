"""In-graph post-processing for an exported model: ONNX ``NonMaxSuppression`` + per-image top-k.

Appended to a graph whose output is the decoded ``predictions (B, N, 5 + C)`` (cx, cy, w, h in
input pixels, objectness, class probabilities), it computes exactly what
``detector.postprocess.postprocess`` does in PyTorch:

* score of a box = objectness x its best class probability (one class per box);
* class-aware NMS (boxes of different classes never suppress each other);
* at most ``max_detections`` per image, by decreasing score;

and returns ``detections (B, K, 6)`` = x1, y1, x2, y2 (input pixels), score, class id, with
``num_detections (B,)`` valid rows per image (the rest are zeros), ``K = min(max_detections, N * C)``.
The thresholds are optional inputs whose defaults are stored in the graph, so one file serves
any threshold. One difference from PyTorch: ONNX keeps scores strictly above the threshold.
This module needs ``onnx`` but not torch.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from yolo4.core.onnx_metadata import CONF_INPUT, DETECTIONS, IOU_INPUT, MAX_DET_INPUT, NUM_DETECTIONS

# [cx, cy, w, h] @ M = [cx - w/2, cy - h/2, cx + w/2, cy + h/2]: one MatMul, exact in float32
# (every product is by 0, 1 or 0.5).
CXCYWH_TO_XYXY = np.array([[1, 0, 1, 0], [0, 1, 0, 1], [-0.5, 0, 0.5, 0], [0, -0.5, 0, 0.5]], np.float32)


def append_nms(
    model: onnx.ModelProto, num_classes: int, conf_threshold: float, iou_threshold: float, max_detections: int
) -> onnx.ModelProto:
    """Replace the single ``predictions`` output of ``model`` by ``detections`` and
    ``num_detections`` (see the module docstring). Modifies and returns ``model``."""
    graph = model.graph
    if len(graph.output) != 1:
        raise ValueError(f"expected one decoded output, the graph has {len(graph.output)}")
    pred = graph.output[0].name
    del graph.output[:]

    def const(name: str, value) -> str:
        graph.initializer.append(numpy_helper.from_array(np.asarray(value), f"nms/{name}"))
        return f"nms/{name}"

    nodes: list[onnx.NodeProto] = []

    def node(op: str, inputs: list[str], name: str, outputs: int = 1, **attrs) -> list[str]:
        outs = [f"nms/{name}" if outputs == 1 else f"nms/{name}_{i}" for i in range(outputs)]
        nodes.append(helper.make_node(op, inputs, outs, name=f"nms/{name}", **attrs))
        return outs

    i64 = lambda *v: np.array(v, np.int64)  # noqa: E731
    axis2 = const("axis2", i64(2))
    # (B, N, 5 + C) -> boxes (B, N, 4) xyxy, single-class scores transposed to (B, C, N)
    (cxcywh,) = node("Slice", [pred, const("s0", i64(0)), const("s4", i64(4)), axis2], "cxcywh")
    (obj,) = node("Slice", [pred, "nms/s4", const("s5", i64(5)), axis2], "objectness")
    (cls,) = node("Slice", [pred, "nms/s5", const("end", i64(np.iinfo(np.int64).max)), axis2], "class_probs")
    (scores,) = node("Mul", [cls, obj], "scores")  # (B, N, C)
    (boxes,) = node("MatMul", [cxcywh, const("xyxy_matrix", CXCYWH_TO_XYXY)], "boxes")  # (B, N, 4)
    (best,) = node("ArgMax", [scores], "best_class", axis=2, keepdims=0)  # (B, N)
    onehot_values = const("onehot_values", np.array([0.0, 1.0], np.float32))
    (onehot,) = node("OneHot", [best, const("depth", i64(num_classes)), onehot_values], "onehot", axis=-1)
    (single,) = node("Mul", [scores, onehot], "best_scores")  # other classes zeroed: one class per box
    (single_t,) = node("Transpose", [single], "scores_by_class", perm=[0, 2, 1])  # (B, C, N)

    conf, iou, max_det = _optional_inputs(graph, conf_threshold, iou_threshold, max_detections)
    (selected,) = node("NonMaxSuppression", [boxes, single_t, max_det, iou, conf], "selected")  # (K, 3): b, c, n

    # Scatter the kept scores into a dense (B, C * N) map (-1 elsewhere) and take the top k per
    # image: gives per-image order and the max_detections cap without any loop.
    (shape,) = node("Shape", [pred], "pred_shape")
    (batch,) = node("Slice", [shape, "nms/s0", const("s1", i64(1))], "batch")  # [B]
    (n,) = node("Slice", [shape, "nms/s1", const("s2", i64(2))], "num_boxes")  # [N]
    (cn,) = node("Mul", [n, const("num_classes", i64(num_classes))], "num_scores")  # [C * N]
    (dense_shape,) = node("Concat", [batch, cn], "dense_shape", axis=0)
    minus_one = helper.make_tensor("value", TensorProto.FLOAT, [1], [-1.0])
    (dense0,) = node("ConstantOfShape", [dense_shape], "dense_init", value=minus_one)
    sel_b, sel_c, sel_n = (
        node("Gather", [selected, const(f"col{i}", i64(i)[0])], f"sel{i}", axis=1)[0] for i in range(3)
    )
    (flat,) = node("Add", [node("Mul", [sel_c, n], "class_offset")[0], sel_n], "flat_index")  # c * N + n
    one = const("axis1", i64(1))
    (scatter_idx,) = node(
        "Concat", [node("Unsqueeze", [sel_b, one], "sel_b2")[0], node("Unsqueeze", [flat, one], "flat2")[0]],
        "scatter_index", axis=1,
    )  # fmt: skip
    (sel_scores,) = node("GatherND", [single_t, selected], "selected_scores")  # (K,)
    (dense,) = node("ScatterND", [dense0, scatter_idx, sel_scores], "dense_scores")  # (B, C * N)
    (k,) = node("Min", [max_det, cn], "k")
    top_scores, top_index = node("TopK", [dense, k], "topk", outputs=2, axis=1, largest=1, sorted=1)  # (B, K)
    (top_class,) = node("Div", [top_index, n], "top_class")
    (top_box,) = node("Mod", [top_index, n], "top_box")
    (top_box3,) = node("Unsqueeze", [top_box, axis2], "top_box3")
    (top_boxes,) = node("GatherND", [boxes, top_box3], "top_boxes", batch_dims=1)  # (B, K, 4)
    (class_f,) = node("Cast", [top_class], "top_class_f", to=TensorProto.FLOAT)
    columns = [top_boxes, node("Unsqueeze", [top_scores, axis2], "s3")[0], node("Unsqueeze", [class_f, axis2], "c3")[0]]
    (rows,) = node("Concat", columns, "rows", axis=2)  # (B, K, 6)
    (valid,) = node("GreaterOrEqual", [top_scores, const("zero", np.array(0.0, np.float32))], "valid")  # (B, K)
    (valid3,) = node("Unsqueeze", [valid, axis2], "valid3")
    nodes.append(helper.make_node("Where", [valid3, rows, "nms/zero"], [DETECTIONS], name="nms/detections"))
    (valid_i,) = node("Cast", [valid], "valid_i", to=TensorProto.INT64)
    nodes.append(helper.make_node("ReduceSum", [valid_i, one], [NUM_DETECTIONS], name="nms/count", keepdims=0))

    graph.node.extend(nodes)
    graph.output.extend([
        helper.make_tensor_value_info(DETECTIONS, TensorProto.FLOAT, ["batch", "max_detections", 6]),
        helper.make_tensor_value_info(NUM_DETECTIONS, TensorProto.INT64, ["batch"]),
    ])  # fmt: skip
    return model


def _optional_inputs(graph: onnx.GraphProto, conf: float, iou: float, max_det: int) -> tuple[str, str, str]:
    """Graph inputs that also have an initializer: ONNX Runtime uses the stored default unless
    the caller feeds a value."""
    specs = [
        (CONF_INPUT, TensorProto.FLOAT, np.array([conf], np.float32)),
        (IOU_INPUT, TensorProto.FLOAT, np.array([iou], np.float32)),
        (MAX_DET_INPUT, TensorProto.INT64, np.array([max_det], np.int64)),
    ]
    for name, dtype, value in specs:
        graph.input.append(helper.make_tensor_value_info(name, dtype, [1]))
        graph.initializer.append(numpy_helper.from_array(value, name))
    return CONF_INPUT, IOU_INPUT, MAX_DET_INPUT


def add_nms(source, out, conf_threshold: float = 0.25, iou_threshold: float = 0.45, max_detections: int = 300):
    """An exported decoded-output yolo4 file -> the same model with in-graph NMS (what
    ``export_onnx(..., nms=True)`` writes), without exporting from PyTorch again."""
    import json
    from pathlib import Path

    from yolo4.core.onnx_metadata import NMS, nms_layout, parse_metadata
    from yolo4.detector.checkpoint import write_atomic

    model = onnx.load(str(source))
    props = {p.key: p.value for p in model.metadata_props}
    metadata = parse_metadata(props, str(source))
    if metadata.layout["kind"] == NMS or metadata.precision != "fp32":
        raise ValueError(f"{source}: add NMS to an FP32 file with decoded outputs")
    append_nms(model, metadata.config.num_classes, conf_threshold, iou_threshold, max_detections)
    helper.set_model_props(model, {**props, "output": json.dumps(nms_layout(conf_threshold, iou_threshold, max_detections))})
    onnx.checker.check_model(model, full_check=True)
    write_atomic(out, model.SerializeToString())
    return Path(out)
