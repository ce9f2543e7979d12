import pickle

import numpy as np
import pytest
import torch
from yolo4.core.presets import yolov4_nano
from yolo4.detector.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from yolo4.detector.loading import load_model
from yolo4.detector.model import build_model


def test_round_trip_rebuilds_the_same_model(tmp_path):
    config = yolov4_nano(class_names=["cell", "other"])
    model = build_model(config).eval()
    path = tmp_path / "m.pt"
    save_checkpoint(path, model, config, epoch=3, metrics={"map50": 0.5})
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]  # no temporary files left behind
    state = load_checkpoint(path)  # uses weights_only=True
    assert state["config"] == config and state["epoch"] == 3
    loaded = load_model(path)
    x = torch.rand(1, 3, 96, 96)
    with torch.no_grad():
        for a, b in zip(model(x), loaded.model.eval()(x)):
            assert torch.equal(a, b)


def test_corrupt_and_foreign_checkpoints_give_clear_errors(tmp_path):
    good = tmp_path / "good.pt"
    save_checkpoint(good, build_model(yolov4_nano()), yolov4_nano())
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="not a yolo4 checkpoint: a PyTorch file"):
        load_checkpoint(truncated)

    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(CheckpointError, match="not a yolo4 checkpoint"):
        load_checkpoint(foreign)

    pickled_module = tmp_path / "module.pt"
    with open(pickled_module, "wb") as f:
        pickle.dump(torch.nn.Linear(2, 2), f)
    with pytest.raises(CheckpointError, match="written by another tool") as caught:
        load_checkpoint(pickled_module)
    assert "weights_only" not in str(caught.value)  # torch's advice would run the file's code

    onnx_file = tmp_path / "model.onnx"
    onnx_file.write_bytes(b"\x08\x07onnx")
    with pytest.raises(CheckpointError, match="an ONNX file: pass it with --onnx"):
        load_checkpoint(onnx_file)
    darknet = tmp_path / "x.weights"
    darknet.write_bytes(np.array([0, 2, 5, 0, 0], "<i4").tobytes() + b"\0" * 64)
    with pytest.raises(CheckpointError, match="a Darknet .weights file: give its --cfg"):
        load_checkpoint(darknet)

    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "nothing.pt")


def test_a_failed_write_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "m.pt"
    save_checkpoint(path, build_model(yolov4_nano()), yolov4_nano(), epoch=1)
    before = path.read_bytes()

    def explode(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("os.replace", explode)
    with pytest.raises(OSError):
        save_checkpoint(path, build_model(yolov4_nano()), yolov4_nano(), epoch=2)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]
