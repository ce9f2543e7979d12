"""Our checkpoint format: self-describing, atomic to write, ``weights_only`` to read.

A checkpoint is a dict of builtins and tensors::

    {"format": "yolo4", "version": 1, "config": ModelConfig.to_dict(), "model": state_dict,
     "ema": state_dict | None, "optimizer": ..., "epoch": int, "metrics": {...}, ...}

so it loads with ``torch.load(weights_only=True)`` and rebuilds the model without code
from the run that wrote it.
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from yolo4.core.config import ModelConfig

FORMAT, VERSION = "yolo4", 1


class CheckpointError(ValueError):
    pass


def write_atomic(path: str | Path, data: bytes) -> None:
    """Write via a temporary file in the same folder and rename: a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file normal permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(path: str | Path, model: torch.nn.Module, config: ModelConfig, **extra: Any) -> None:
    """``extra`` (optimizer state, epoch, metrics, ema, darknet training params...) must be
    builtins and tensors, so that ``weights_only`` loading accepts it."""
    state = {"format": FORMAT, "version": VERSION, "config": config.to_dict(), "model": model.state_dict(), **extra}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    write_atomic(path, buffer.getvalue())


def describe_foreign(path: Path) -> str:
    """What a file that is not one of our checkpoints seems to be, and what to do with it.
    (Not torch's advice to load with ``weights_only=False``: that runs the file's code.)"""
    head = path.read_bytes()[:64]
    if path.suffix.lower() == ".onnx":
        return "an ONNX file: pass it with --onnx"
    if path.suffix.lower() == ".weights" or (len(head) >= 12 and head[:4] == b"\x00\x00\x00\x00" and head[4:8] in (b"\x01\x00\x00\x00", b"\x02\x00\x00\x00")):
        return "a Darknet .weights file: give its --cfg too (or --model yolov4-tiny / yolov4 to train from it)"
    if head[:2] == b"PK" or head[:1] == b"\x80":
        return ("a PyTorch file written by another tool (it stores Python objects, e.g. an ultralytics or "
                "torchvision checkpoint); yolo4 reads its own checkpoints only, without running code from the file")
    return "neither a yolo4 checkpoint (yolo4 train / convert) nor a Darknet, ONNX or PyTorch file"


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read and validate a checkpoint; ``config`` comes back as a ``ModelConfig``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception:  # pickle errors, zip errors, unsafe globals: all mean "not ours"
        raise CheckpointError(f"{path}: not a yolo4 checkpoint: {describe_foreign(path)}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a yolo4 checkpoint (no format marker; was it written by another tool?)")
    if state.get("version", 0) > VERSION:
        raise CheckpointError(f"{path}: checkpoint version {state['version']} is newer than this code ({VERSION})")
    try:
        state["config"] = ModelConfig.from_dict(state["config"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: invalid model config in checkpoint: {e}") from None
    return state
