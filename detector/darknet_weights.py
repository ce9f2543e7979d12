"""Read and write Darknet ``.weights`` files onto a ``Yolo4`` model.

Layout (darknet/src/parser.c): an int32 header ``major, minor, revision``, then ``seen``
(images trained on) as int64 when ``major * 10 + minor >= 2``, else int32; then float32
values for each convolution in cfg order: with batch-norm ``beta, gamma, running_mean,
running_var, weights``, without it ``bias, weights``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from yolo4.detector.blocks import ConvBNAct
from yolo4.detector.checkpoint import write_atomic


class DarknetWeightsError(ValueError):
    pass


@dataclass(frozen=True)
class WeightsHeader:
    major: int = 0
    minor: int = 2
    revision: int = 5
    seen: int = 0

    @property
    def seen_is_64bit(self) -> bool:
        return self.major * 10 + self.minor >= 2

    def to_bytes(self) -> bytes:
        head = np.array([self.major, self.minor, self.revision], dtype="<i4").tobytes()
        return head + np.array([self.seen], dtype="<i8" if self.seen_is_64bit else "<i4").tobytes()


def parse_header(data: bytes, path: str | Path = "<bytes>") -> tuple[WeightsHeader, int]:
    """Returns the header and its size in bytes."""
    if len(data) < 16:
        raise DarknetWeightsError(f"{path}: {len(data)} bytes is too short for a Darknet .weights header")
    major, minor, revision = (int(v) for v in np.frombuffer(data, "<i4", 3))
    if not (0 <= major < 1000 and 0 <= minor < 1000 and 0 <= revision < 100000):
        raise DarknetWeightsError(
            f"{path}: not a Darknet .weights file (header version {major}.{minor}.{revision})"
        )
    wide = major * 10 + minor >= 2
    size = 20 if wide else 16
    if len(data) < size:
        raise DarknetWeightsError(f"{path}: truncated header ({len(data)} bytes)")
    seen = int(np.frombuffer(data, "<i8" if wide else "<i4", 1, 12)[0])
    return WeightsHeader(major, minor, revision, seen), size


def _tensors(module: nn.Module) -> list[torch.Tensor]:
    """The tensors of one Darknet convolution, in file order."""
    if isinstance(module, ConvBNAct):
        bn = module.bn
        return [bn.bias, bn.weight, bn.running_mean, bn.running_var, module.conv.weight]
    return [module.bias, module.weight]


def _describe(model: nn.Module, module: nn.Module, index: int, labels: list[str] | None) -> str:
    if labels is not None:
        return labels[index]
    name = next(n for n, m in model.named_modules() if m is module)
    return f"convolution #{index} ({name})"


def count_values(model) -> int:
    return sum(t.numel() for m in model.darknet_convs() for t in _tensors(m))


def load_darknet_weights(model, path: str | Path, layer_labels: list[str] | None = None) -> WeightsHeader:
    """Load ``path`` into ``model`` (in place). ``layer_labels`` names each conv for errors
    (e.g. "layer 54 (yolov4.cfg:612)"); nothing is modified unless the whole file fits."""
    path = Path(path)
    data = path.read_bytes()
    header, offset = parse_header(data, path)
    if (len(data) - offset) % 4:
        raise DarknetWeightsError(f"{path}: {len(data) - offset} bytes after the header is not a whole number of float32 values")
    values = np.frombuffer(data, "<f4", offset=offset)
    convs = model.darknet_convs()
    needed = count_values(model)
    position, pending = 0, []
    for index, module in enumerate(convs):
        tensors = _tensors(module)
        size = sum(t.numel() for t in tensors)
        if position + size > len(values):
            conv = module.conv if isinstance(module, ConvBNAct) else module
            raise DarknetWeightsError(
                f"{path}: file too short at {_describe(model, module, index, layer_labels)}: "
                f"[convolutional] filters={conv.out_channels} size={conv.kernel_size[0]} expects "
                f"{size} values, only {len(values) - position} remain (the model needs {needed} values, "
                f"the file holds {len(values)}): the .weights does not match the .cfg"
            )
        for t in tensors:
            pending.append((t, values[position : position + t.numel()]))
            position += t.numel()
    if position != len(values):
        raise DarknetWeightsError(
            f"{path}: {len(values) - position} values left after the last layer "
            f"(the model needs {needed} values, the file holds {len(values)}): "
            "the .weights does not match the .cfg"
        )
    with torch.no_grad():
        for tensor, chunk in pending:
            tensor.copy_(torch.from_numpy(chunk.copy()).view_as(tensor))
    return header


def darknet_weights_bytes(model, header: WeightsHeader = WeightsHeader()) -> bytes:
    parts = [header.to_bytes()]
    with torch.no_grad():
        for module in model.darknet_convs():
            for t in _tensors(module):
                parts.append(t.detach().to("cpu", torch.float32).contiguous().numpy().astype("<f4").tobytes())
    return b"".join(parts)


def save_darknet_weights(model, path: str | Path, header: WeightsHeader = WeightsHeader()) -> None:
    """Write ``model`` as a Darknet ``.weights`` file (atomically)."""
    write_atomic(Path(path), darknet_weights_bytes(model, header))
