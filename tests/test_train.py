import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
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


def test_a_rectangular_input_trains_and_detects_at_its_own_shape(data, tmp_path):
    from yolo4.core.config import Thresholds
    from yolo4.detector.predictor import Predictor
    from yolo4.training.loss_config import scaled_loss

    result = fit(config(data, tmp_path / "run", "epochs=1", "img_size=128x96", "loss_form=scaled"))
    assert result.model.config.input_size == (96, 128)
    # the objectness gain follows the cell count (area), not one side
    assert scaled_loss(result.model.config).obj_normalizer == pytest.approx(96 * 128 / 640**2)
    raws = result.model.eval()(torch.zeros(1, 3, 96, 128))
    assert [r.shape[2:4] for r in raws] == [(96 // h.stride, 128 // h.stride) for h in result.model.config.heads]
    predictor = Predictor.from_files(result.run_dir / "weights" / "last.pt", thresholds=Thresholds(conf=0.0, max_det=50))
    assert predictor.input_size == (96, 128)
    boxes = predictor.detect_batch([np.full((60, 80, 3), 127, np.uint8)])[0].boxes
    assert len(boxes) and np.all(boxes[:, 2:] <= [80, 60])  # back in the 80x60 image's pixels


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


def test_ema_tau_sets_how_soon_the_average_starts_lagging(data, tmp_path, straight):
    """ema_tau reaches the trainer's EMA: ramped in almost at once (tau ~ 0), the average stays near
    the starting weights over 6 steps; with YOLOv5's 2000 it follows the model closely."""
    out = tmp_path / "run"
    fit(config(data, out, "epochs=2", "dropblock=0.2", "augment.cutmix=0.5", "ema_tau=1e-6"))
    model, ema, _ = _final_state(out / "weights" / "last.pt")
    assert_same_weights(model, straight[0])  # the average never feeds back into training

    def gap(a, b):
        return max((a[k] - b[k]).abs().max().item() for k in a if a[k].is_floating_point())

    assert gap(straight[0], straight[1]) < 0.1 * gap(model, ema)


def test_resume_refuses_incompatible_changes(data, tmp_path):
    out = tmp_path / "run"
    fit(config(data, out, "epochs=1", "max_iters=1"))
    with pytest.raises(ValueError, match=r"cannot resume with changed settings \(lr: 0.002 -> 0.05\)"):
        fit(apply_overrides(TrainConfig(), ["lr=0.05"]), resume=out / "weights" / "last.pt")


INTERRUPTED = ["epochs=50", "dropblock=0.2", "augment.cutmix=0.5"]


@pytest.fixture(scope="module")
def uninterrupted(data, tmp_path_factory):
    """50 epochs stopped (max_iters changes no schedule) at iteration 12: 4 whole epochs."""
    out = tmp_path_factory.mktemp("uninterrupted") / "run"
    fit(config(data, out, *INTERRUPTED, "max_iters=12"))
    return _final_state(out / "weights" / "last.pt"), out / "metrics.csv"


def interrupt_and_resume(data, out: Path, sig: int, capsys) -> tuple[int, str]:
    """Start a run that cannot finish, send ``sig`` once it has saved a resume point at
    iteration 2 or later, then resume it to iteration 12 (in this process: ``yolo4 train``'s own
    entry point, without a second torch start-up). Returns where it resumed and what it printed."""
    from yolo4.cli import main

    args = [sys.executable, "-m", "yolo4", "train", "--data", str(data), "--img", "96", "--batch", "2",
            "--workers", "0", "--epochs", "50", "--out", str(out), "--set", "val_every=0", "warmup_epochs=0.5",
            "lr=0.002", *INTERRUPTED[1:], "save_every=1"]  # fmt: skip
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    last = out / "weights" / "last.pt"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if last.exists() and load_checkpoint(last)["progress"]["iteration"] >= 2:
            break
        time.sleep(0.05)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    if sig == signal.SIGKILL:
        assert proc.returncode == -signal.SIGKILL
    else:  # Ctrl-C: the step under way finishes, a resume point is saved, exit 130
        assert proc.returncode == 130, err[-2000:]
        assert "interrupted after iteration" in err and "Traceback" not in err
    resumed_at = load_checkpoint(last)["progress"]["iteration"]
    assert 2 <= resumed_at < 12
    capsys.readouterr()
    assert main(["train", "--resume", str(last), "--set", "max_iters=12"]) == 0
    return resumed_at, capsys.readouterr().out


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "Ctrl-C"])
def test_interrupted_then_resumed_equals_the_uninterrupted_run(data, tmp_path, uninterrupted, sig, capsys):
    (model_ref, ema_ref, _), metrics_ref = uninterrupted
    out = tmp_path / "interrupted"
    resumed_at, printed = interrupt_and_resume(data, out, sig, capsys)
    # The resumed run ran the remaining steps only (not a restart that happens to agree).
    assert f"resuming at iteration {resumed_at} of 12" in printed
    assert f"done ({12 - resumed_at} steps)" in printed
    model, ema, progress = _final_state(out / "weights" / "last.pt")
    assert progress["iteration"] == 12
    assert_same_weights(model, model_ref)  # BatchNorm running statistics and counters included
    assert_same_weights(ema, ema_ref)
    import csv

    rows = lambda path: [(r["epoch"], r["loss_total"], r["loss_box"]) for r in csv.DictReader(open(path))]  # noqa: E731
    assert rows(out / "metrics.csv") == rows(metrics_ref)  # the interrupted epoch's loss covers all of it


def _ddp_worker(rank, world, port, data, out, results):
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    result = fit(config(data, out, *DDP_SETTINGS))
    torch.save(result.model.state_dict(), results / f"rank{rank}.pt")


# BatchNorm in eval mode (its batch statistics would be per rank) and Darknet's loss (a sum per
# image: its gradient averages over ranks exactly as over one batch); DropBlock's masks are per rank.
DDP_SETTINGS = ("epochs=2", "batch_size=4", "dropblock=0", "freeze_bn=true", "loss_form=darknet")


def test_two_gloo_processes_equal_one_process_with_the_same_global_batch(data, tmp_path):
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
    # One process with the same global batch (4 images a step) ends with the same weights.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = fit(config(data, tmp_path / "single", *DDP_SETTINGS)).model.state_dict()
    finally:
        torch.set_num_threads(threads)
    for name in names:
        torch.testing.assert_close(rank0[name], single[name], rtol=1e-4, atol=1e-5, msg=name)


def _finite_worker(rank, port, results):
    import datetime

    import torch.distributed as dist
    from yolo4.training.setup import Process
    from yolo4.training.trainer import NonFiniteLoss, check_finite

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2, timeout=datetime.timedelta(seconds=60))
    terms = {"total": torch.tensor(float("nan") if rank == 1 else 1.5)}  # only rank 1 diverged
    try:
        check_finite(terms, 7, Process(rank=rank, world=2))
        outcome = "carried on"
    except NonFiniteLoss as e:
        outcome = str(e)
    (results / f"rank{rank}.txt").write_text(outcome)
    dist.destroy_process_group()


def test_a_non_finite_loss_on_one_rank_stops_every_rank():
    """Rank 0's loss is fine: it must stop too, or it would wait for rank 1 in the next all-reduce."""
    import tempfile

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        results = Path(tmp)
        mp.start_processes(_finite_worker, args=(port, results), nprocs=2, join=True, start_method="fork")
        outcomes = [(results / f"rank{r}.txt").read_text() for r in (0, 1)]
    assert all("loss is not finite at iteration 7" in o for o in outcomes), outcomes
    assert "'total': 1.5" in outcomes[0] and "'total': nan" in outcomes[1]  # each rank names its own values
