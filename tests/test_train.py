import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch
import torch.multiprocessing as mp
from synthetic import write_voc
from yolo4.detector.checkpoint import load_checkpoint
from yolo4.training.config import TrainConfig, apply_overrides
from yolo4.training.trainer import fit

STILL = ["augment.mosaic=0", "augment.flip=0", "augment.hue=0", "augment.saturation=0", "augment.brightness=0",
         "augment.scale=1,1", "augment.translate=0"]  # fmt: skip


def config(data, out, *overrides) -> TrainConfig:
    base = TrainConfig(data=str(data), model="yolov4-nano", img_size=96, batch_size=2, workers=0, out=str(out),
                       val_every=0, warmup_epochs=0.5, lr=0.002)  # fmt: skip
    return apply_overrides(base, list(overrides))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_voc(tmp_path_factory.mktemp("voc"), count=6)


def test_nano_overfits_a_handful_of_images(data, tmp_path):
    # The val split of this data is its train split: the last epoch scores the memorised images.
    cfg = config(data, tmp_path / "run", "epochs=60", "optimizer=adamw", "lr=0.003", "dropblock=0", "ema=false",
                 "close_mosaic=0", "val_every=60", *STILL)  # fmt: skip
    result = fit(cfg)
    import csv

    rows = list(csv.DictReader(open(result.run_dir / "metrics.csv")))
    first, last = float(rows[0]["loss_total"]), float(rows[-1]["loss_total"])
    # Objectness targets are IoUs (soft labels), so the loss has a floor well above zero.
    assert last < 0.5 * first, f"loss went from {first} to {last}"
    assert float(rows[-1]["mAP50"]) > 0.5, rows[-1]["mAP50"]
    assert (result.run_dir / "curves.png").stat().st_size > 1000
    assert (result.run_dir / "config.yaml").exists() and (result.run_dir / "weights" / "last.pt").exists()


def _final_state(path):
    state = load_checkpoint(path)
    return state["model"], state["ema"], state["progress"]


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.fixture(scope="module")
def straight(data, tmp_path_factory):
    """Two epochs of 3 steps, uninterrupted (DropBlock and augmentation on)."""
    out = tmp_path_factory.mktemp("straight") / "run"
    fit(config(data, out, "epochs=2", "dropblock=0.2", "augment.cutmix=0.5"))
    return _final_state(out / "weights" / "last.pt")


def test_stop_and_resume_equals_an_uninterrupted_run(data, tmp_path, straight):
    out = tmp_path / "run"
    fit(config(data, out, "epochs=2", "dropblock=0.2", "augment.cutmix=0.5", "max_iters=4"))  # stops mid-epoch 2
    assert load_checkpoint(out / "weights" / "last.pt")["progress"]["iteration"] == 4
    fit(TrainConfig(), resume=out / "weights" / "last.pt")
    model, ema, progress = _final_state(out / "weights" / "last.pt")
    assert progress["iteration"] == straight[2]["iteration"] == 6
    assert_same_weights(model, straight[0])
    assert_same_weights(ema, straight[1])


def test_resume_refuses_incompatible_changes(data, tmp_path):
    out = tmp_path / "run"
    fit(config(data, out, "epochs=1", "max_iters=1"))
    with pytest.raises(ValueError, match=r"cannot resume with changed settings \(lr: 0.002 -> 0.05\)"):
        fit(apply_overrides(TrainConfig(), ["lr=0.05"]), resume=out / "weights" / "last.pt")


def test_sigkill_mid_run_then_resume(data, tmp_path):
    # A 50-epoch run cannot finish before the kill lands; both runs stop
    # (max_iters changes no schedule) at iteration 12, so the resumed one must equal the uninterrupted one.
    common = ["epochs=50", "dropblock=0.2", "augment.cutmix=0.5"]
    fit(config(data, tmp_path / "straight", *common, "max_iters=12"))
    reference = _final_state(tmp_path / "straight" / "weights" / "last.pt")

    out = tmp_path / "killed"
    args = [sys.executable, "-m", "yolo4", "train", "--data", str(data), "--img", "96", "--batch", "2",
            "--workers", "0", "--epochs", "50", "--out", str(out), "--set", "val_every=0", "warmup_epochs=0.5",
            "lr=0.002", "dropblock=0.2", "augment.cutmix=0.5", "save_every=1"]  # fmt: skip
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = out / "weights" / "last.pt"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if last.exists() and load_checkpoint(last)["progress"]["iteration"] >= 2:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert 2 <= load_checkpoint(last)["progress"]["iteration"] < 12
    run = subprocess.run([sys.executable, "-m", "yolo4", "train", "--resume", str(last), "--set", "max_iters=12"],
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert run.returncode == 0, run.stderr
    model, ema, progress = _final_state(last)
    assert progress["iteration"] == 12
    assert_same_weights(model, reference[0])
    assert_same_weights(ema, reference[1])


def _ddp_worker(rank, world, port, data, out, results):
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    result = fit(config(data, out, "epochs=2", "batch_size=4", "dropblock=0"))
    torch.save(result.model.state_dict(), results / f"rank{rank}.pt")


def test_two_gloo_processes_end_with_identical_weights(data, tmp_path):
    from yolo4.detector.model import build_model

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_ddp_worker, args=(2, port, data, tmp_path / "run", tmp_path), nprocs=2, join=True)
    rank0, rank1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    state = load_checkpoint(tmp_path / "run" / "weights" / "last.pt")
    # 6 images over 2 ranks at 2 per rank: one full batch per epoch (the short one is dropped).
    assert state["progress"]["iteration"] == 2
    torch.manual_seed(0)
    initial = build_model(state["config"]).state_dict()
    names = [name for name, _ in build_model(state["config"]).named_parameters()]
    for name in names:  # parameters; BatchNorm running stats are per-rank by design
        assert torch.equal(rank0[name], rank1[name]), name
    assert any(not torch.equal(rank0[name], initial[name]) for name in names)  # they did train
