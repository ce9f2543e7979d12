"""An exported FP32 yolo4 ONNX file -> static INT8 (QDQ) or FP16, the decode kept in float.

INT8 follows ONNX Runtime's recipe: ``quant_pre_process`` (shape inference + graph
optimisation), then ``quantize_static`` in QDQ format, calibrated on arrays pre-processed
exactly as at inference (``calibration_inputs``), with one of ``SCHEMES``. The default,
``u8s8-7bit`` (uint8 activations, per-channel symmetric int8 weights in 7 bits: ORT's
``reduce_range``), gives the same answers on every x86 CPU: ONNX Runtime's U8S8 kernels for
AVX2 and AVX-512 without VNNI multiply with VPMADDUBSW, which saturates the sum of two
products at int16 (255 x 127 x 2 > 32767), while the VNNI, AMX and ARM kernels accumulate in
int32. With 7-bit weights the pair sum stays below 255 x 64 x 2 = 32640, so every kernel
computes the same integers (measured: README, "Quantize").

What stays in float is found from the graph, not from node names: the heads' last
convolutions are the ``Conv`` nodes with no ``Conv`` downstream, and everything downstream of
them (sigmoid / exp / grid arithmetic, the final concat, in-graph NMS) is the decode tail.
Quantizing the tail would round box sizes through ``exp`` and scores through ``sigmoid``.
This module is torch-free.
"""

from __future__ import annotations

import os
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import onnx
from onnx import numpy_helper
from yolo4.core.config import ModelConfig
from yolo4.core.image_io import read_image
from yolo4.core.onnx_metadata import INPUT_NAME, parse_metadata
from yolo4.core.preprocess import preprocess_batch

CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
# name -> (activation type, weight type, 7-bit weights). See the module docstring.
SCHEMES = {
    "u8s8-7bit": ("uint8", "int8", True),
    "u8s8": ("uint8", "int8", False),  # exact only on VNNI / AMX / ARM: saturates on AVX2
    "u8u8": ("uint8", "uint8", False),  # exact everywhere, slower than FP32 for small models on AVX-512
    "s8s8": ("int8", "int8", False),
}
DEFAULT_SCHEME = "u8s8-7bit"


@dataclass(frozen=True)
class FloatRegion:
    head_convs: tuple[str, ...]  # the last Conv of each head
    tail: tuple[str, ...]  # every node downstream of them


def find_float_region(model: onnx.ModelProto) -> FloatRegion:
    """Locate the heads' last convolutions and the decode tail by graph analysis.

    ONNX graphs are topologically sorted, so one backward pass tells for every node whether a
    ``Conv`` lies downstream of it, and one forward pass collects the nodes fed by the heads.
    """
    nodes = list(model.graph.node)
    consumers: dict[str, list[int]] = defaultdict(list)
    for i, node in enumerate(nodes):
        for name in node.input:
            consumers[name].append(i)
    feeds_conv = [False] * len(nodes)  # a Conv is reachable from this node's outputs
    for i in reversed(range(len(nodes))):
        feeds_conv[i] = any(
            nodes[j].op_type == "Conv" or feeds_conv[j] for out in nodes[i].output for j in consumers[out]
        )
    heads = [i for i, node in enumerate(nodes) if node.op_type == "Conv" and not feeds_conv[i]]
    tail: set[int] = set()
    frontier = [j for i in heads for out in nodes[i].output for j in consumers[out]]
    while frontier:
        j = frontier.pop()
        if j not in tail:
            tail.add(j)
            frontier += [k for out in nodes[j].output for k in consumers[out]]
    unnamed = [i for i in heads + sorted(tail) if not nodes[i].name]
    if unnamed:
        raise ValueError(f"{len(unnamed)} nodes have no name; call name_nodes() first")
    return FloatRegion(tuple(nodes[i].name for i in heads), tuple(nodes[i].name for i in sorted(tail)))


def find_mish_nodes(model: onnx.ModelProto) -> tuple[str, ...]:
    """The nodes of Mish activations in their exported form (``detector.export.expand_mish``:
    ``Min -> Exp -> ... -> Mul(x, .)``), found by that structure. They stay float: 8 bits
    cannot hold ``exp(x)^2``, and ONNX Runtime has no INT8 Mish kernel anyway."""
    consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for node in model.graph.node:
        for name in node.input:
            consumers[name].append(node)
    found: list[str] = []
    for node in model.graph.node:
        if node.op_type != "Min" or not any(c.op_type == "Exp" for c in consumers[node.output[0]]):
            continue
        x, island, frontier = node.input[0], [node], list(consumers[node.output[0]])
        while frontier and len(island) <= 8:
            current = frontier.pop()
            if current in island:
                continue
            island.append(current)
            if x not in current.input:  # the final Mul(x, tanh(softplus(x))) ends the island
                frontier += consumers[current.output[0]]
        ends = [n for n in island[1:] if x in n.input]
        if len(island) == 7 and len(ends) == 1 and ends[0].op_type == "Mul":
            found += [n.name for n in island]
    return tuple(found)


def name_nodes(model: onnx.ModelProto) -> None:
    """Give every unnamed node a unique name (exclusion lists work by name)."""
    used = {node.name for node in model.graph.node if node.name}
    for i, node in enumerate(model.graph.node):
        if not node.name:
            name = f"{node.op_type}_{i}"
            while name in used:
                name += "_"
            node.name = name
            used.add(name)


def calibration_inputs(image_paths: Iterable[str | Path], config: ModelConfig) -> Iterator[np.ndarray]:
    """``(1, 3, H, W)`` float32 network inputs, pre-processed per the model's contract at its
    input size: what the runtime feeds at inference."""
    for path in image_paths:
        batch, _ = preprocess_batch([read_image(path)], config.input_size, config.preprocess)
        yield batch


def read_model(path: str | Path) -> onnx.ModelProto:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such ONNX file")
    try:
        return onnx.load(str(path))
    except Exception as e:  # DecodeError and friends
        raise ValueError(f"{path}: not an ONNX file ({type(e).__name__})") from None


def quantize_int8(
    model_path: str | Path,
    out_path: str | Path,
    calibration: Iterable[np.ndarray],
    method: str = "minmax",
    float_head_convs: bool = True,
    scheme: str = DEFAULT_SCHEME,
) -> FloatRegion:
    """Static INT8 quantization (QDQ) of an FP32 yolo4 file.

    Args:
        model_path: FP32 ``.onnx`` from ``detector.export``.
        out_path: where the INT8 file goes (metadata copied, ``precision`` = ``int8``).
        calibration: ``(B, 3, H, W)`` float32 inputs (see ``calibration_inputs``); wrap it in a
            progress bar if wanted, it is consumed once.
        method: calibration method, one of ``CALIBRATION_METHODS``.
        float_head_convs: keep the heads' last convolutions in float too (their outputs go
            through ``exp`` into box sizes).
        scheme: one of ``SCHEMES`` (stored in the file's ``quantization`` metadata).

    Returns:
        The nodes kept in float.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {sorted(SCHEMES)}, got {scheme!r}")
    if method not in CALIBRATION_METHODS:
        raise ValueError(f"calibration method must be one of {CALIBRATION_METHODS}, got {method!r}")
    original = read_model(model_path)
    metadata = parse_metadata({p.key: p.value for p in original.metadata_props}, str(model_path))
    if metadata.precision != "fp32":
        raise ValueError(f"{model_path}: is already {metadata.precision}; quantize the FP32 export")
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        # ORT's symbolic shape inference cannot prove that the strided maps of a --dynamic file
        # line up (it does not know the sides are multiples of 32), and on failure it drops a
        # temporary model into the working directory; ONNX's own shape inference and the graph
        # optimisation are all a CNN needs.
        quant_pre_process(str(model_path), str(prepared), skip_symbolic_shape=True)
        model = onnx.load(str(prepared))
        name_nodes(model)
        region = find_float_region(model)
        if len(region.head_convs) != len(metadata.config.heads):
            raise ValueError(
                f"{model_path}: found {len(region.head_convs)} head convolutions, the config has "
                f"{len(metadata.config.heads)} heads; is this a yolo4 export?"
            )
        onnx.save(model, str(prepared))
        quantized = Path(tmp) / "quantized.onnx"
        activations, weights, seven_bits = SCHEMES[scheme]
        types = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
        excluded = list(region.tail) + list(find_mish_nodes(model))
        excluded += list(region.head_convs) if float_head_convs else []
        quantize_static(
            str(prepared), str(quantized), _Reader(calibration),
            quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=types[activations], weight_type=types[weights], reduce_range=seven_bits,
            nodes_to_exclude=excluded,
            calibrate_method={"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                              "percentile": CalibrationMethod.Percentile}[method],
            extra_options={"ActivationSymmetric": False, "WeightSymmetric": weights == "int8"},
        )  # fmt: skip
        result = onnx.load(str(quantized))
    shorten_names(result.graph)
    _save_with_precision(result, {**metadata.props, "quantization": scheme}, "int8", out_path)
    return region


def convert_fp16(model_path: str | Path, out_path: str | Path) -> FloatRegion:
    """Float16 weights and activations (for GPUs); inputs/outputs and the decode tail float32."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = read_model(model_path)
    metadata = parse_metadata({p.key: p.value for p in model.metadata_props}, str(model_path))
    if metadata.precision != "fp32":
        raise ValueError(f"{model_path}: is already {metadata.precision}; convert the FP32 export")
    name_nodes(model)
    region = find_float_region(model)
    _clamp_mish_for_fp16(model)
    half = convert_float_to_float16(model, keep_io_types=True, node_block_list=list(region.tail))
    sort_topologically(half.graph)  # the converter appends its input Casts after their users
    _save_with_precision(half, metadata.props, "fp16", out_path)
    return region


def store_weights_in_half(model_path: str | Path, out_path: str | Path, min_size: int = 1024) -> int:
    """The FP32 file with its large weights stored as float16 and cast back to float32 when the
    session loads (ONNX Runtime folds the ``Cast`` of an initializer once): half the bytes, the
    same float32 arithmetic, weights rounded to float16 (a relative error below 5e-4; on the
    official yolov4-tiny, coco-mini val mAP50-95 0.2682 -> 0.2681). The metadata records it
    (``weights_storage: float16``). Returns the number of tensors stored in half."""
    model = read_model(model_path)
    metadata = parse_metadata({p.key: p.value for p in model.metadata_props}, str(model_path))
    if metadata.precision != "fp32":
        raise ValueError(f"{model_path}: is {metadata.precision}; store the weights of an FP32 export")
    graph = model.graph
    halves, casts = [], []
    for tensor in list(graph.initializer):
        values = numpy_helper.to_array(tensor)
        if values.dtype != np.float32 or values.size < min_size:
            continue  # small tensors (biases, decode constants) stay exact
        halves.append(numpy_helper.from_array(values.astype(np.float16), f"{tensor.name}/half"))
        casts.append(onnx.helper.make_node("Cast", [halves[-1].name], [tensor.name], to=onnx.TensorProto.FLOAT,
                                           name=f"{tensor.name}/to_float"))  # fmt: skip
        graph.initializer.remove(tensor)
    graph.initializer.extend(halves)
    nodes = casts + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    _save_with_precision(model, {**metadata.props, "weights_storage": "float16"}, "fp32", out_path)
    return len(halves)


def shorten_names(graph: onnx.GraphProto) -> None:
    """Short tensor and node names (``t12``, ``Conv_40``); the graph's inputs and outputs keep theirs.

    The quantizer names every scale, zero point and Q/DQ output after the original tensor
    (``model.neck.spp_out.convs.1.conv.weight_quantized_zero_point``...): in a QDQ nano file
    those strings weigh as much as a quarter of the INT8 weights.
    """
    keep = {v.name for v in graph.input} | {v.name for v in graph.output} | {""}
    names: dict[str, str] = {}

    def short(name: str) -> str:
        return name if name in keep else names.setdefault(name, f"t{len(names)}")

    for tensor in graph.initializer:
        tensor.name = short(tensor.name)
    for i, node in enumerate(graph.node):
        node.name = f"{node.op_type}_{i}"
        node.input[:] = [short(n) for n in node.input]
        node.output[:] = [short(n) for n in node.output]
    for info in graph.value_info:
        info.name = short(info.name)


def sort_topologically(graph: onnx.GraphProto) -> None:
    """Reorder ``graph.node`` so that every node comes after the producers of its inputs."""
    available = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        ready = [n for n in pending if all(name in available for name in n.input)]
        if not ready:
            raise ValueError(f"graph has a cycle or missing inputs at node {pending[0].name!r}")
        for node in ready:
            available.update(node.output)
        ordered += ready
        ready_ids = {id(n) for n in ready}
        pending = [n for n in pending if id(n) not in ready_ids]
    copies = [onnx.NodeProto() for _ in ordered]
    for copy, node in zip(copies, ordered):
        copy.CopyFrom(node)  # before the originals are removed from the graph
    del graph.node[:]
    graph.node.extend(copies)


def _clamp_mish_for_fp16(model: onnx.ModelProto) -> None:
    """Mish's ``exp(min(x, 20))^2`` overflows float16; clamping at 5 keeps it below 65504 and
    changes mish(x > 5) by < 1e-4 relative, under float16's own precision (1e-3)."""
    names = set(find_mish_nodes(model))
    clamps = {n.input[1] for n in model.graph.node if n.name in names and n.op_type == "Min"}
    for tensor in model.graph.initializer:
        if tensor.name in clamps:
            tensor.CopyFrom(numpy_helper.from_array(np.array(5.0, np.float32), tensor.name))


class _Reader:
    """``onnxruntime.quantization.CalibrationDataReader`` over an iterable of input arrays."""

    def __init__(self, batches: Iterable[np.ndarray]):
        self._batches = iter(batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        return None if batch is None else {INPUT_NAME: np.ascontiguousarray(batch, dtype=np.float32)}

    def __iter__(self):
        return self

    def __next__(self):
        item = self.get_next()
        if item is None:
            raise StopIteration
        return item


def _save_with_precision(model: onnx.ModelProto, props: dict[str, str], precision: str, out_path: str | Path) -> None:
    onnx.helper.set_model_props(model, {**props, "precision": precision})
    onnx.checker.check_model(model)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.tmp")
    try:
        onnx.save(model, str(tmp))  # one file: the models are far below protobuf's 2 GB limit
        os.replace(tmp, out_path)
    finally:
        tmp.unlink(missing_ok=True)
