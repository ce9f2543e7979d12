"""PyTorch -> one self-contained ONNX file: decode in-graph, optional NMS, config as metadata.

    export_onnx(model, config, "model.onnx", img_size=416, dynamic=True, nms=False)

The file's input is ``images (B, 3, H, W)`` float32, pre-processed per the model's contract
(``detector.preprocess``); its output is described by the ``output`` metadata entry
(``detector.onnx_metadata``): the decoded ``predictions (B, N, 5 + C)``, or with ``nms=True``
``detections (B, K, 6)`` + ``num_detections (B,)``.

We use the ``torch.export``-based exporter (``dynamo=True``): the legacy TorchScript exporter
records the decode grids (``ones_like`` of a head map) with the traced shape as constants,
so its "dynamic" files fail at any other resolution.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper
from yolo4.core.config import ModelConfig
from yolo4.core.onnx_metadata import INPUT_NAME, PREDICTIONS, build_metadata, decoded_layout, nms_layout
from yolo4.detector.checkpoint import write_atomic
from yolo4.detector.decode import DecodedModel
from yolo4.detector.onnx_nms import append_nms

MISH_CLAMP = 20.0  # exp(20) squared fits float32; above it tanh(softplus(x)) rounds to 1 anyway
DEFAULT_OPSET = 18  # the exporter's down-conversion to 17 breaks Split on yolov4-tiny
MAX_SIDE = 4096  # largest image side a dynamic file accepts


def export_onnx(
    model: torch.nn.Module,
    config: ModelConfig,
    path: str | Path,
    img_size: int | tuple[int, int] | None = None,
    dynamic: bool = False,
    nms: bool = False,
    opset: int = DEFAULT_OPSET,
    metrics: Mapping[str, Any] | None = None,
    source: str = "",
    conf_threshold: float = 0.25,
    iou_threshold: float = 0.45,
    max_detections: int = 300,
    extra_metadata: Mapping[str, str] | None = None,
) -> Path:
    """Export ``model`` (a ``Yolo4`` returning raw maps) with its decode to ``path``.

    Args:
        model: the raw-map model; exported in eval mode, its mode is restored afterwards.
        config: its ``ModelConfig``; stored as metadata with ``input_size = img_size``.
        path: the ``.onnx`` file to write (one file: weights are embedded).
        img_size: input side, or (height, width); multiples of 32; default ``config.input_size``.
        dynamic: free batch and image size (multiples of 32 up to ``MAX_SIDE``).
        nms: append ONNX ``NonMaxSuppression`` post-processing (``detector.onnx_nms``);
            ``conf_threshold``, ``iou_threshold``, ``max_detections`` are its defaults,
            overridable per run.
        opset: ONNX opset, 18 or newer.
        metrics: training metrics to store (e.g. the checkpoint's ``metrics``).
        source: the file the model came from, stored for provenance.
        extra_metadata: more ``metadata_props`` entries (strings; the yolo4 keys are reserved).

    Returns:
        ``path``.
    """
    size = _input_size(img_size or config.input_size)
    if opset < 18:
        raise ValueError(f"opset {opset} is not supported: use 18 or newer")
    reserved = set(build_metadata(config, decoded_layout(config.num_classes), dynamic))
    if set(extra_metadata or {}) & reserved:
        raise ValueError(f"extra_metadata may not replace the yolo4 keys {sorted(set(extra_metadata) & reserved)}")
    export_config = config.replace(input_size=size)
    proto = _export_decoded(model, export_config, size, dynamic, opset)
    layout = decoded_layout(config.num_classes)
    if nms:
        append_nms(proto, config.num_classes, conf_threshold, iou_threshold, max_detections)
        layout = nms_layout(conf_threshold, iou_threshold, max_detections)
    expand_mish(proto)
    metadata = build_metadata(export_config, layout, dynamic, "fp32", metrics, source)
    metadata.update({str(k): str(v) for k, v in (extra_metadata or {}).items()})
    onnx.helper.set_model_props(proto, metadata)
    proto.doc_string = f"yolo4 {config.name}: {config.num_classes} classes, input {size[1]}x{size[0]}"
    onnx.checker.check_model(proto, full_check=True)
    write_atomic(path, proto.SerializeToString())
    return Path(path)


def _input_size(size: int | tuple[int, int]) -> tuple[int, int]:
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    if h % 32 or w % 32 or h <= 0 or w <= 0:
        raise ValueError(f"image size {h}x{w} must be positive multiples of 32")
    return int(h), int(w)


def _export_decoded(
    model: torch.nn.Module, config: ModelConfig, size: tuple[int, int], dynamic: bool, opset: int
) -> onnx.ModelProto:
    """``images (B, 3, H, W) -> predictions (B, N, 5 + C)`` as an in-memory ModelProto."""
    was_training = model.training
    wrapped = DecodedModel(model, config).eval()
    example = torch.zeros(2 if dynamic else 1, 3, *size)
    dynamic_shapes = None
    if dynamic:
        # Sides are declared as 32 * k so the exporter knows every stride divides them.
        Dim = torch.export.Dim
        dynamic_shapes = {
            INPUT_NAME: {
                0: Dim("batch", min=1, max=1024),
                2: 32 * Dim("h32", min=1, max=MAX_SIDE // 32),
                3: 32 * Dim("w32", min=1, max=MAX_SIDE // 32),
            }
        }
    try:
        program = torch.onnx.export(
            wrapped, (example,), None, input_names=[INPUT_NAME], output_names=[PREDICTIONS],
            opset_version=opset, dynamo=True, external_data=False, dynamic_shapes=dynamic_shapes,
            optimize=True, verbose=False,
        )  # fmt: skip
    finally:
        model.train(was_training)
    proto = program.model_proto
    for node in proto.graph.node:
        # The exporter annotates every node with its Python stack trace and FX node: debugging
        # aids that hold local paths and grow a nano file by ~10% (more in the QDQ graph).
        del node.metadata_props[:]
    _name_dims(proto, dynamic)
    return proto


def _name_dims(proto: onnx.ModelProto, dynamic: bool) -> None:
    """Readable names for the free dimensions (the exporter writes ``s0``, ``32*s1``, ...)."""
    if not dynamic:
        return
    for dim, name in zip(proto.graph.input[0].type.tensor_type.shape.dim, ("batch", None, "height", "width")):
        if name:
            dim.dim_param = name
    out = proto.graph.output[0].type.tensor_type.shape.dim
    out[0].dim_param, out[1].dim_param = "batch", "candidates"


def expand_mish(proto: onnx.ModelProto) -> int:
    """Replace every ``Mish`` node by ``x * n / (n + 2)``, ``n = e * (e + 2)``, ``e = exp(min(x, 20))``.

    That is mish(x) = x * tanh(softplus(x)), since tanh(log(1 + e)) = ((1 + e)^2 - 1) / ((1 + e)^2 + 1).
    ONNX Runtime's CPU ``Mish`` kernel (and ``Softplus`` + ``Tanh``) costs about five times this
    one-``Exp`` form, which made yolov4's Mish backbone 1.8x slower; results differ by < 1e-6.
    ``detector.quantize`` keeps these nodes in float. Returns the number of nodes replaced.
    """
    graph = proto.graph
    clamp, two = "mish/clamp", "mish/two"
    nodes, count = [], 0
    for node in graph.node:
        if node.op_type != "Mish":
            nodes.append(node)
            continue
        x, y, k = node.input[0], node.output[0], f"{node.name or f'mish{count}'}/"
        nodes += [
            helper.make_node("Min", [x, clamp], [k + "x"], name=k + "min"),
            helper.make_node("Exp", [k + "x"], [k + "e"], name=k + "exp"),
            helper.make_node("Add", [k + "e", two], [k + "e2"], name=k + "add_e"),
            helper.make_node("Mul", [k + "e", k + "e2"], [k + "n"], name=k + "n"),
            helper.make_node("Add", [k + "n", two], [k + "n2"], name=k + "add_n"),
            helper.make_node("Div", [k + "n", k + "n2"], [k + "tanh"], name=k + "tanh_softplus"),
            helper.make_node("Mul", [x, k + "tanh"], [y], name=k + "mish"),
        ]
        count += 1
    if count:
        graph.initializer.extend([
            numpy_helper.from_array(np.array(MISH_CLAMP, np.float32), clamp),
            numpy_helper.from_array(np.array(2.0, np.float32), two),
        ])  # fmt: skip
        del graph.node[:]
        graph.node.extend(nodes)
    return count
