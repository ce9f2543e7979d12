import json

import cv2
import numpy as np
import pytest
from darknet_files import write_random_weights
from yolo4.detector.loading import load_darknet


class Run:
    def __init__(self, returncode: int, stdout: str, stderr: str):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


@pytest.fixture
def yolo4(capsys, monkeypatch):
    """``yolo4 ARGS`` in this process (no interpreter start-up): exit code and output. An
    uncaught exception fails the test, which is stricter than looking for a traceback."""
    from yolo4.cli import main

    def run(*args, cwd):
        monkeypatch.chdir(cwd)
        capsys.readouterr()
        code = main([str(a) for a in args])
        out = capsys.readouterr()
        return Run(code, out.out, out.err)

    return run


def test_convert_detect_and_back_to_darknet(yolo4, tmp_path, darknet_dir, images_dir):
    cfg = darknet_dir / "yolov4-tiny.cfg"
    weights = tmp_path / "tiny.weights"
    write_random_weights(load_darknet(cfg, None).model, weights, seed=3)

    run = yolo4("convert", "--cfg", cfg, "--weights", weights, "--out", tmp_path / "tiny.pt", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "not used by our trainer" in run.stderr and "jitter" in run.stderr  # reported, not fatal

    run = yolo4("convert", "--weights", tmp_path / "tiny.pt", "--out", tmp_path / "back.weights", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "back.weights").read_bytes() == weights.read_bytes()
    assert (tmp_path / "back.cfg").read_text() == cfg.read_text()

    broken = tmp_path / "inputs"
    broken.mkdir()
    (broken / "broken.jpg").write_bytes(b"not a jpeg")
    cv2.imwrite(str(broken / "grey.png"), np.full((50, 80, 3), 128, np.uint8))
    out = tmp_path / "det"
    run = yolo4("detect", images_dir / "dog.jpg", broken, "--weights", tmp_path / "tiny.pt",
                "--conf", "0.5", "--out", out, cwd=tmp_path)  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "broken.jpg: cannot read image, skipped" in run.stderr
    assert "Warning" not in run.stderr and "jitter" not in run.stderr  # training-only cfg keys: convert/train say so, once
    record = json.loads((out / "dog.json").read_text())
    assert record["image_size"] == {"height": 576, "width": 768}
    assert all(0 <= d["box"][0] <= d["box"][2] <= 768 for d in record["detections"])
    assert cv2.imread(str(out / "dog.jpg")).shape == (576, 768, 3)
    assert (out / "grey.json").exists() and not (out / "broken.json").exists()


def test_cli_errors_are_messages_not_tracebacks(yolo4, tmp_path, images_dir):
    (tmp_path / "junk.pt").write_bytes(b"junk")
    run = yolo4("detect", images_dir, "--weights", tmp_path / "junk.pt", cwd=tmp_path)
    assert run.returncode == 2
    assert "not a yolo4 checkpoint" in run.stderr and "weights_only" not in run.stderr
    run = yolo4("detect", images_dir, "--cfg", tmp_path / "yolov4.cfg", cwd=tmp_path)  # a cfg alone is not a model
    assert run.returncode == 2 and "--cfg needs the Darknet --weights" in run.stderr and "Traceback" not in run.stderr
    run = yolo4("detect", images_dir, "--weights", tmp_path / "junk.pt", "--onnx", tmp_path / "m.onnx", cwd=tmp_path)
    assert run.returncode == 2 and "not both" in run.stderr


def test_messages_a_new_user_meets(yolo4, tmp_path, live_nano, nano_onnx, images_dir):
    import socket

    from yolo4.detector.checkpoint import save_checkpoint

    run = yolo4("train", cwd=tmp_path)  # no silent default dataset
    assert run.returncode == 2 and "needs --data" in run.stderr and "bccd" in run.stderr

    # Only unreadable inputs: exit 1, whichever runtime runs the model.
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    save_checkpoint(tmp_path / "nano.pt", *live_nano)
    for model in (("--weights", tmp_path / "nano.pt"), ("--onnx", nano_onnx)):
        run = yolo4("detect", tmp_path / "broken.jpg", *model, "--out", tmp_path / "det", cwd=tmp_path)
        assert run.returncode == 1 and "broken.jpg: cannot read image" in run.stderr, (model, run.stderr)

    # The flag the user passed is the one named.
    run = yolo4("serve", "--onnx", tmp_path / "nope.onnx", cwd=tmp_path)
    assert run.returncode == 2 and "--onnx" in run.stderr and "YOLO4_MODEL" not in run.stderr

    # A taken port: one line, before anything claims to be serving.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = yolo4("serve", "--onnx", nano_onnx, "--port", port, cwd=tmp_path)
    assert run.returncode == 2 and f"port {port}" in run.stderr and "already in use" in run.stderr
    assert "serving" not in run.stdout and len(run.stderr.strip().splitlines()) == 1, run.stderr

    # Default outputs go under runs/, never into the folder the user works in.
    work = tmp_path / "work"
    work.mkdir()
    run = yolo4("detect", images_dir / "dog.jpg", "--onnx", nano_onnx, cwd=work)
    assert run.returncode == 0, run.stderr
    assert sorted(p.name for p in work.iterdir()) == ["runs"] and (work / "runs" / "detect" / "dog.jpg").is_file()
