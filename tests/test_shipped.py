"""The models that ship with the package (serving/models/, yolo4.serving.bundled): their cards tell
the truth about their files, their INT8 files keep FP32's accuracy *on the CPU running this test*
(re-scored here, never read from the card), and every command that takes an optional model runs
the file the service would serve and finds what the sample image shows."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import CI, shared_path
from http_server import ROOT, detect, free_port, request, server_env, start_server, stop_server, yolo4_serve_command
from yolo4.core.cpu import cpu_info, describe_cpu
from yolo4.core.datasets import load_split
from yolo4.serving import bundled
from yolo4.serving.choice import int8_agreement
from yolo4.serving.gate import MAX_MAP50_DROP, score_file
from yolo4.serving.runtime import EdgeDetector

NO_TORCH = "import sys, runpy; sys.modules['torch'] = None; sys.modules['torchvision'] = None\n"
MODELS = bundled.shipped_models()
BUDGET_MB = 40

pytestmark = pytest.mark.skipif(not MODELS, reason="this checkout ships no model")


def box_iou(a, b) -> float:
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    area = lambda r: (r[2] - r[0]) * (r[3] - r[1])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


def check_bccd_sample(result: dict) -> None:
    """BCCD's BloodImage_00125 (its annotation: one white cell at 104,149-275,302, ten red
    cells, four platelets): the white cell where it is annotated, every class found."""
    dets = result["detections"]
    assert result["image_size"] == {"height": 480, "width": 640}
    labels = [d["label"] for d in dets]
    assert set(labels) == {"RBC", "WBC", "Platelets"}, labels
    wbc = [d for d in dets if d["label"] == "WBC"]
    assert len(wbc) == 1 and box_iou(wbc[0]["box"], [104, 149, 275, 302]) > 0.7, wbc
    assert 5 <= labels.count("RBC") <= 20, labels


def check_dog_sample(result: dict) -> None:
    """Darknet's dog.jpg: the dog, the bicycle and the truck (which COCO models also call a car)."""
    assert result["image_size"] == {"height": 576, "width": 768}
    labels = {d["label"] for d in result["detections"]}
    assert {"dog", "bicycle"} <= labels and labels & {"truck", "car"}, labels
    dog = [d for d in result["detections"] if d["label"] == "dog"]
    assert len(dog) == 1 and box_iou(dog[0]["box"], [128, 224, 314, 540]) > 0.7, dog  # Darknet's own dog box


SAMPLE_CHECKS = {"yolov4-tiny-bccd": check_bccd_sample, "yolov4-tiny-coco": check_dog_sample}


def check_sample(name: str, result: dict) -> None:
    SAMPLE_CHECKS[name](result)


def run(module: str, args: list[str], cwd: Path, block_torch: bool = False) -> subprocess.CompletedProcess:
    """``python -m module args`` in ``cwd`` with no YOLO4_* variables (and torch unimportable)."""
    command = [sys.executable, "-m", module, *args]
    if block_torch:
        code = NO_TORCH + f"runpy.run_module({module!r}, run_name='__main__', alter_sys=True)"
        command = [sys.executable, "-c", code, *args]
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd, env=server_env(cwd, None), timeout=300)


def test_cards_describe_the_shipped_files():
    total = 0
    for name, card in MODELS.items():
        assert name in SAMPLE_CHECKS, f"{name}: add its sample-image check"
        assert card["default_file"] in {f["file"] for f in card["files"]}
        assert bundled.sample_image(name).is_file()
        for entry in card["files"]:
            path = bundled.MODELS_DIR / entry["file"]
            data = path.read_bytes()
            total += len(data)
            assert hashlib.sha256(data).hexdigest() == entry["sha256"], f"{path} is not the file the card describes"
            assert abs(len(data) / 1e6 - entry["megabytes"]) < 0.01
            runtime = EdgeDetector(path)
            assert runtime.precision == entry["precision"]
            assert runtime.metadata.get("quantization") == entry.get("quantization")
            assert list(runtime.config.class_names) == card["classes"]
            assert "family" in entry["measured_on"] or "avx" in entry["measured_on"]  # every figure names its CPU
    assert total <= BUDGET_MB * 1e6, f"shipped model files weigh {total / 1e6:.1f} MB, over the {BUDGET_MB} MB budget"
    licences = (ROOT / "data" / "samples" / "README.md").read_text()
    for name in MODELS:
        assert bundled.sample_image(name).name in licences


@pytest.mark.parametrize("name", [n for n, c in MODELS.items() if {f["precision"] for f in c["files"]} == {"fp32", "int8"}])
def test_shipped_int8_keeps_fp32_accuracy_on_this_cpu(name):
    card = MODELS[name]
    shared_path("datasets")
    dataset = load_split(card["gate"]["data"], card["gate"]["split"])
    files = bundled.model_files(name)
    fp32, int8 = (score_file(files[p], dataset).metrics for p in ("fp32", "int8"))
    drop = 100 * (fp32["mAP50"] - int8["mAP50"])
    assert drop <= MAX_MAP50_DROP, f"{name}: INT8 loses {drop:.2f} mAP50 points here ({fp32} vs {int8})"
    assert fp32["mAP50"] > 0.3  # the models do detect: the comparison is not between zeros


def test_edge_detector_without_a_path_runs_the_measured_choice(tmp_path, monkeypatch):
    monkeypatch.setenv("YOLO4_CACHE", str(tmp_path))
    name = bundled.default_model_name()
    runtime = EdgeDetector()
    assert runtime.bundled and runtime.choice is not None and runtime.model_path in bundled.model_files(name).values()
    assert runtime.choice.precision == runtime.precision and runtime.num_threads == runtime.choice.threads
    assert "measured" in runtime.choice.reason and not runtime.choice.cached
    check_sample(name, runtime.detect(cv2.imread(str(bundled.sample_image(name)))).to_dict())
    again = EdgeDetector()  # this machine's cached choice
    assert again.choice.cached and again.model_path == runtime.model_path
    assert EdgeDetector(runtime.model_path).bundled is False  # a path given is taken as given
    assert (tmp_path / "runtime-choice.json").is_file()


def test_a_choice_measured_on_a_busy_machine_is_used_but_not_cached(tmp_path, monkeypatch):
    """A start-up burst beside the measurement (another process spinning on a core) must not
    become this machine's cached choice: it once cost the service a third of its throughput."""
    import time

    from yolo4.serving.choice import DISTURBED, choose

    monkeypatch.setenv("YOLO4_CACHE", str(tmp_path))
    files = {"file": bundled.model_files(bundled.default_model_name())["fp32"]}
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        busy = choose(None, files, "file")
    finally:
        spinner.kill()
        spinner.wait()
    assert busy.other_load > 0.5 and "not cached" in busy.reason, busy
    assert not (tmp_path / "runtime-choice.json").exists()
    for _ in range(3):  # once the machine is quiet, a measurement is cached
        quiet = choose(None, files, "file")
        if quiet.cached:
            break
    assert quiet.cached and quiet.other_load <= DISTURBED


def test_detect_edge_and_info_use_the_default_model(tmp_path):
    name = bundled.default_model_name()
    sample = bundled.sample_image(name)
    detect_run = run("yolo4", ["detect", str(sample), "--out", "detect"], tmp_path)
    assert detect_run.returncode == 0, detect_run.stderr[-2000:]
    assert f"shipped {name}" in detect_run.stderr
    via_detect = json.loads((tmp_path / "detect" / f"{sample.stem}.json").read_text())
    check_sample(name, via_detect)
    assert (tmp_path / "detect" / f"{sample.stem}.jpg").stat().st_size > 10_000

    edge_run = run("yolo4.edge", [str(sample)], tmp_path, block_torch=True)
    assert edge_run.returncode == 0, edge_run.stderr[-2000:]
    via_edge = json.loads((tmp_path / "runs" / "edge" / f"{sample.stem}.json").read_text())
    assert [d["label"] for d in via_edge["detections"]] == [d["label"] for d in via_detect["detections"]]
    np.testing.assert_allclose([d["box"] for d in via_edge["detections"]], [d["box"] for d in via_detect["detections"]])

    info = run("yolo4", ["info"], tmp_path, block_torch=True)
    assert info.returncode == 0, info.stderr[-2000:]
    for model in MODELS:
        assert model in info.stdout
    assert "mAP50" in info.stdout and MODELS[name]["training"]["command"] in info.stdout


def test_service_with_no_model_argument_serves_the_default_model(tmp_path):
    name = bundled.default_model_name()
    sample = bundled.sample_image(name)
    srv = start_server(yolo4_serve_command(None, free_port()), tmp_path, server_env(tmp_path, None))
    try:
        check_sample(name, detect(srv, sample.name, sample.read_bytes()))
        status, _, body = request(srv, "GET", "/info")
        info = json.loads(body)
        assert status == 200 and info["bundled"] is True and info["model_card"] == MODELS[name]
        assert info["model_file"] in {f["file"] for f in MODELS[name]["files"]}
        assert info["choice"]["precision"] == info["precision"] and "measured" in info["choice"]["reason"]
        assert info["cpu"] and info["runtime_threads"] == info["choice"]["threads"]
        assert f"shipped {name}" in srv.log.read_text(errors="replace")
    finally:
        stop_server(srv)


EMULATED_AVX2 = "EPYC-Rome"  # AVX2 + FMA, no AVX-512, no VNNI: the U8S8 kernels that saturate
# Flags any of which makes MLAS pick other integer kernels than the emulated CPU's.
OTHER_INT8_KERNELS = {"avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx_vnni_int8", "amx_int8"}


def host_runs_the_emulated_kernels() -> bool:
    """An x86 CPU with AVX2 and none of ``OTHER_INT8_KERNELS`` (an AVX2-only EPYC) runs the very
    kernels qemu would present, natively and faster: emulating them again proves nothing more."""
    isa = set(cpu_info()["isa"])
    return "avx2" in isa and not isa & OTHER_INT8_KERNELS


INT8_MODELS = [n for n, c in MODELS.items() if "int8" in {f["precision"] for f in c["files"]}]


@pytest.fixture(scope="module")
def emulated_int8_runs(tmp_path_factory):
    """Each shipped INT8 file run on its sample by ONNX Runtime under qemu's AVX2-only CPU. They
    start at once and each may use every core: the S8S8 file runs MLAS's portable kernel (x86 has
    S8S8 kernels only with AVX-VNNI-INT8), 86 s of emulated work on one thread (Intel Xeon, this commit), and the
    U8S8 file finishes long before it, leaving its core to the S8S8 file's second thread."""
    if host_runs_the_emulated_kernels():
        pytest.skip(f"this CPU ({describe_cpu()}) runs the emulated CPU's integer kernels natively: "
                    "test_shipped_int8_keeps_fp32_accuracy_on_this_cpu scored them on the whole gate split")
    qemu = shutil.which("qemu-x86_64")
    if qemu is None:
        if CI:
            raise FileNotFoundError("qemu-x86_64 is missing: .ci/run installs qemu-user")
        pytest.skip("qemu-user is not installed (apt-get install qemu-user)")
    code = (
        "import json, os, sys, cv2\n"
        "from yolo4.serving.runtime import EdgeDetector\n"
        "print(json.dumps(EdgeDetector(sys.argv[2], num_threads=os.cpu_count()).detect(cv2.imread(sys.argv[1])).to_dict()))\n"
    )  # fmt: skip
    cwd = tmp_path_factory.mktemp("emulated")
    runs = {name: subprocess.Popen([qemu, "-cpu", EMULATED_AVX2, sys.executable, "-c", code, str(bundled.sample_image(name)),
                                    str(bundled.model_files(name)["int8"])], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True, cwd=cwd)  # fmt: skip
            for name in INT8_MODELS}
    try:
        return {name: (run.communicate(timeout=600), run.returncode) for name, run in runs.items()}
    finally:
        for run in runs.values():
            run.kill()


@pytest.mark.parametrize("name", INT8_MODELS)
def test_int8_agrees_with_fp32_on_an_emulated_avx2_cpu(name, emulated_int8_runs):
    """The same INT8 file run by ONNX Runtime's AVX2 integer kernels (qemu's user-mode emulator
    presents an AVX2-only CPU, so MLAS picks its VPMADDUBSW kernels whatever this CPU is): the
    sample's confident FP32 detections must survive. The u8s8 scheme without 7-bit weights lost
    the platelets here, as on a real AVX2 EPYC."""
    files = bundled.model_files(name)
    sample = bundled.sample_image(name)
    (stdout, stderr), returncode = emulated_int8_runs[name]
    assert returncode == 0, stderr[-2000:]
    emulated = json.loads(stdout.strip().splitlines()[-1])
    check_sample(name, emulated)
    fp32 = EdgeDetector(files["fp32"], num_threads=1).detect(cv2.imread(str(sample))).to_dict()  # float kernels: this CPU's

    class Dets:
        def __init__(self, r):
            d = r["detections"]
            self.boxes = np.array([x["box"] for x in d]).reshape(-1, 4)
            self.scores = np.array([x["score"] for x in d])
            self.class_ids = np.array([x["class_id"] for x in d])

    assert int8_agreement(Dets(fp32), Dets(emulated)) >= 0.9


def test_held_out_line_names_every_seed_and_their_mean():
    """One lucky seed must not stand for a recipe on a card: each run is listed, with the mean."""
    from yolo4.bundle import held_out_entry

    def summary(m50, m, rbc):
        return {"metrics": {"mAP50": m50, "mAP50-95": m}, "per_class": [{"name": "RBC", "ap50": rbc, "ap": 0.5}]}

    entry = held_out_entry([summary(0.901, 0.597, 0.852), summary(0.891, 0.585, 0.841)])
    assert entry["metrics"] == pytest.approx({"mAP50": 0.896, "mAP50-95": 0.591})
    assert "0.901 / 0.597 (RBC 0.852 / 0.500); 0.891 / 0.585 (RBC 0.841 / 0.500)" in entry["description"]
    assert entry["description"].endswith("mean of 2 seeds 0.896 / 0.591")
    assert "mean" not in held_out_entry([summary(0.901, 0.597, 0.852)])["description"]


def test_peer_entry_takes_the_bench_outputs_and_refuses_figures_from_another_cpu():
    """The card's peer comes straight from bench/peer_accuracy.py and bench/train.py --json, and
    only if both ran on the CPU that trains the shipped model."""
    from yolo4.bundle import peer_entry

    accuracy = {"trainer": "ultralytics 8.4.190 YOLOv8n, from scratch", "cpu": "CPU A", "train_split": "train",
                "val_split": "val", "epochs": 30, "img": 512, "batch": 16, "train_seconds": 1112.4,
                "metrics": {"mAP50": 0.7951, "mAP50-95": 0.5112},
                "per_class": [{"name": "Platelets", "ap50": 0.5861, "ap": 0.2504}]}  # fmt: skip
    bench = {"cpu": "CPU A", "img": "512x384", "peer_img": 512, "epochs": 3,
             "rows": [{"trainer": "yolo4 yolov4-tiny", "epoch_s": 30.04}, {"trainer": "ultralytics YOLOv8n", "epoch_s": 48.66}]}  # fmt: skip
    entry = peer_entry(accuracy, bench, "CPU A")
    assert entry["val_from_train_split"]["per_class"] == {"Platelets": {"AP50": 0.586, "AP50-95": 0.25}}
    assert entry["training_time"]["estimated_seconds"] == 1460 and entry["training_time"]["ours_img"] == "512x384"
    assert "val 0.795 / 0.511" in entry["description"] and "about 1,460 s for 30" in entry["description"]
    assert "training_time" not in peer_entry(accuracy, None, "CPU A")
    for other in ({**accuracy, "cpu": "CPU B"}, accuracy):
        with pytest.raises(ValueError, match="measure the peer on this CPU"):
            peer_entry(other, {**bench, "cpu": "CPU B"} if other is accuracy else bench, "CPU A")


def test_epochs_fit_takes_as_many_epochs_as_fit_in_the_peers_time_on_this_cpu():
    """``python -m yolo4.bundle bccd --epochs fit`` trains no longer than the peer's 30 epochs: on the
    AVX2 EPYC's figures (ours 105.4 s, YOLOv8n 92.8 s per epoch) that is 26; where ours is faster, the
    recipe's 30. Figures of another CPU, size or kind of epoch are refused."""
    from yolo4.bundle import epochs_within_budget, parse_args

    def bench(ours: float, peer: float, **extra) -> dict:
        return {"cpu": "CPU A", "img": "512", "peer_img": 512, "epochs": 3, "set": ["weights=yolov4-tiny.weights"],
                "rows": [{"trainer": "yolo4 yolov4-tiny", "epoch_s": ours}, {"trainer": "ultralytics YOLOv8n", "epoch_s": peer}],
                **extra}  # fmt: skip

    assert epochs_within_budget(bench(105.4, 92.8), 512, "CPU A", fine_tune=True) == 26
    assert epochs_within_budget(bench(37.6, 48.7), 512, "CPU A", fine_tune=True) == 30
    assert epochs_within_budget(bench(37.6, 48.7), 512, "CPU A", peer_epochs=30, cap=40) == 38
    with pytest.raises(ValueError, match="run bench/train.py on this CPU"):
        epochs_within_budget(bench(105.4, 92.8), 512, "CPU B")
    with pytest.raises(ValueError, match="--img 544"):
        epochs_within_budget(bench(105.4, 92.8), 544, "CPU A")
    with pytest.raises(ValueError, match="a fine-tuning epoch of ours"):
        epochs_within_budget(bench(105.4, 92.8), 512, "CPU A", fine_tune=False)
    with pytest.raises(ValueError, match="add --set weights="):
        epochs_within_budget(bench(105.4, 92.8, set=[]), 512, "CPU A", fine_tune=True)
    assert parse_args(["bccd", "--epochs", "fit", "--peer", "p.json", "--peer-bench", "b.json"]).epochs == "fit"
    assert parse_args(["bccd", "--epochs", "26"]).epochs == 26
    for argv in (["bccd", "--epochs", "fit"], ["bccd", "--epochs", "0"], ["bccd", "--epochs", "many"]):
        with pytest.raises(SystemExit):
            parse_args(argv)
