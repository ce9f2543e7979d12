"""COCO evaluation: metrics against pycocotools itself, category-id mapping, sharding, errors."""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import ROOT, shared_path
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from yolo4.core.coco import (
    METRIC_NAMES,
    EvalInputError,
    detections_to_coco,
    evaluate_results,
    ground_truth_from_json,
    ground_truth_from_set,
    quick_metrics,
    xyxy_to_coco_xywh,
)  # fmt: skip
from yolo4.core.config import COCO_EVAL
from yolo4.core.datasets import load_split
from yolo4.core.evaluate import check_images, class_mapping, run_inference, shard_batches
from yolo4.core.presets import preset
from yolo4.detector.checkpoint import save_checkpoint
from yolo4.detector.model import build_model
from yolo4.detector.predictor import Predictor
from yolo4.training.validate import evaluate_model

COCO_MINI_VAL = "annotations/instances_val2017.json"


def yolo4(*args, cwd=ROOT, module=("-m", "yolo4"), env=None):
    return subprocess.run([sys.executable, *module, *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env=env and {**os.environ, **env})  # fmt: skip


@pytest.fixture(scope="module")
def coco_val():
    shared_path("datasets", "coco-mini")
    return load_split(ROOT / "data" / "coco-mini.yaml", "val")


@pytest.fixture(scope="module")
def nano(tmp_path_factory):
    """A random yolov4-nano at 224 whose head biases give plenty of boxes above 0.001 (the
    default init starts at objectness x class = 1e-4, which would yield no detections)."""
    torch.manual_seed(0)
    config = preset("yolov4-nano", input_size=(224, 224))
    model = build_model(config)
    for head in model.heads:
        head.pred.bias.data.normal_(0.0, 1.0)
    path = tmp_path_factory.mktemp("nano") / "nano.pt"
    save_checkpoint(path, model, config)
    return model, config, path


def gt_as_detections(dataset):
    return [
        r
        for s in dataset.samples
        for r in detections_to_coco(s.image_id, s.boxes, np.ones(len(s.labels)), s.labels, dataset.category_ids)
    ]


def cocoeval_directly(annotation_file: Path, results: list, tmp_path: Path) -> COCOeval:
    """pycocotools used the documented way, on a results file: the reference numbers."""
    path = tmp_path / "direct_results.json"
    path.write_text(json.dumps(results))
    gt = COCO(str(annotation_file))
    evaluator = COCOeval(gt, gt.loadRes(str(path)), "bbox")
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    return evaluator


def test_coco_category_ids_and_box_format(coco_val):
    ids = dict(zip(coco_val.class_names, coco_val.category_ids))
    assert len(ids) == 80 and (ids["person"], ids["bicycle"], ids["toothbrush"]) == (1, 2, 90)
    assert coco_val.class_names[11] == "stop sign" and coco_val.category_ids[11] == 13  # 12 is a gap in COCO
    assert 12 not in coco_val.category_ids and coco_val.category_ids[-1] == 90

    boxes = np.array([[10, 20, 50, 80], [0.5, 1.25, 2.5, 3.0]], np.float32)
    out = detections_to_coco(397133, boxes, np.array([0.9, 0.123456789]), np.array([11, 79]), coco_val.category_ids)
    assert out == [
        {"image_id": 397133, "category_id": 13, "bbox": [10.0, 20.0, 40.0, 60.0], "score": 0.9},
        {"image_id": 397133, "category_id": 90, "bbox": [0.5, 1.25, 2.0, 1.75], "score": 0.12346},
    ]
    np.testing.assert_array_equal(xyxy_to_coco_xywh(np.zeros((0, 4))), np.zeros((0, 4)))
    with pytest.raises(EvalInputError, match="class index 80 has no category id"):
        detections_to_coco(1, boxes, np.ones(2), np.array([3, 80]), coco_val.category_ids)


def test_ground_truth_as_detections_scores_one(coco_val):
    scores = evaluate_results(ground_truth_from_set(coco_val), gt_as_detections(coco_val))
    for name in ("mAP50-95", "mAP50", "mAP75", "AR100"):
        assert scores.metrics[name] == pytest.approx(1.0, abs=1e-12), name
    scored = [row for row in scores.per_class if row.num_gt]
    assert len(scored) == 78 and all(row.ap == pytest.approx(1.0) for row in scored)  # 2 classes absent from val
    assert sum(row.num_gt for row in scores.per_class) == sum(len(s.labels) for s in coco_val.samples)
    # A subset (as a trainer may validate on) is scored on its own images only, not as misses elsewhere.
    subset = dataclasses.replace(coco_val, samples=coco_val.samples[:10])
    assert evaluate_results(ground_truth_from_set(subset), gt_as_detections(subset)).metrics["mAP50-95"] == 1.0


def test_bccd_voc_ground_truth_as_detections_scores_one():
    shared_path("datasets", "bccd")
    dataset = load_split(ROOT / "data" / "bccd.yaml", "val")
    assert dataset.annotation_file is None  # VOC: the COCO ground truth is built in memory
    gt = ground_truth_from_set(dataset)
    assert gt.category_ids == (1, 2, 3) and gt.class_names == ("RBC", "WBC", "Platelets")
    results = gt_as_detections(dataset)
    scores = evaluate_results(gt, results)
    assert scores.metrics["mAP50-95"] == pytest.approx(1.0) and scores.metrics["AR100"] == pytest.approx(1.0)
    drop_wbc = [r for r in results if r["category_id"] != 2]
    assert evaluate_results(gt, drop_wbc).metrics["mAP50-95"] == pytest.approx(2 / 3)


def test_jittered_ground_truth_equals_cocoeval_called_directly(coco_val, tmp_path):
    rng = np.random.default_rng(0)
    results = []
    for s in coco_val.samples:
        keep = rng.random(len(s.labels)) < 0.85  # some misses
        boxes = s.boxes[keep].astype(np.float64)
        wh = np.repeat(boxes[:, 2:] - boxes[:, :2], 2, axis=0).reshape(-1, 4)
        boxes = boxes + rng.normal(0.0, 0.08, boxes.shape) * wh  # localisation error ~8 % of the size
        labels = s.labels[keep].copy()
        flip = rng.random(len(labels)) < 0.1
        labels[flip] = rng.integers(0, 80, flip.sum())  # some wrong classes
        h, w = s.size
        xy = rng.uniform(0, 0.7, (4, 2)) * [w, h]
        false = np.concatenate([xy, xy + rng.uniform(0.05, 0.3, (4, 2)) * [w, h]], axis=1)  # false positives
        boxes, labels = np.concatenate([boxes, false]), np.concatenate([labels, rng.integers(0, 80, 4)])
        results += detections_to_coco(s.image_id, boxes, rng.random(len(labels)), labels, coco_val.category_ids)

    ours = evaluate_results(ground_truth_from_set(coco_val), results)
    reference = cocoeval_directly(coco_val.annotation_file, results, tmp_path)
    assert list(ours.metrics) == list(METRIC_NAMES)
    assert list(ours.metrics.values()) == [float(v) for v in reference.stats]  # exactly
    assert 0.1 < ours.metrics["mAP50-95"] < 0.9  # jittered: neither trivial end
    precision = reference.eval["precision"]
    for k, row in enumerate(ours.per_class):
        assert row.category_id == reference.params.catIds[k]
        p = precision[:, :, k, 0, -1]
        assert row.ap == (float(p[p > -1].mean()) if (p > -1).any() else -1.0)
    assert ours.summary_text.count("Average Precision") == 6
    # The per-epoch validation's faster-coco-eval gives the same numbers (to rounding), or it would not be used.
    import faster_coco_eval  # noqa: F401  (the train extra installs it: quick_metrics must not fall back here)

    quick = quick_metrics(ground_truth_from_set(coco_val), results)
    assert list(quick) == list(METRIC_NAMES)
    np.testing.assert_allclose(list(quick.values()), list(ours.metrics.values()), rtol=0, atol=1e-12)


def write_coco_set(root: Path, images: list[tuple[str, int, int]], annotations: list[tuple[str, int, list]],
                   categories: list[dict], write=True) -> Path:  # fmt: skip
    """A COCO-format split in ``root`` (random-noise pictures) and its dataset YAML."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    ids = {name: i + 1 for i, (name, _, _) in enumerate(images)}
    for name, h, w in images:
        if write:
            cv2.imwrite(str(root / "images" / name), rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
    data = {
        "images": [{"id": ids[n], "file_name": n, "height": h, "width": w} for n, h, w in images],
        "annotations": [
            {"id": i + 1, "image_id": ids[n], "category_id": c, "bbox": b, "area": b[2] * b[3], "iscrowd": 0}
            for i, (n, c, b) in enumerate(annotations)
        ],
        "categories": categories,
    }
    (root / "val.json").write_text(json.dumps(data))
    yaml = root / "set.yaml"
    yaml.write_text(f"format: coco\nroot: {root}\nsplits:\n  val: {{images: images, annotations: val.json}}\n")
    return yaml


@pytest.fixture(scope="module")
def mixed_set(tmp_path_factory, coco_val):
    """Three images of different sizes and aspect ratios, the last without annotations."""
    root = tmp_path_factory.mktemp("mixed")
    categories = [{"id": c, "name": n} for c, n in zip(coco_val.category_ids, coco_val.class_names)]
    yaml = write_coco_set(
        root, [("wide.jpg", 120, 400), ("tall.jpg", 300, 90), ("empty.png", 200, 200)],
        [("wide.jpg", 1, [10, 20, 100, 50]), ("wide.jpg", 3, [200, 10, 150, 100]), ("tall.jpg", 18, [5, 30, 60, 200])],
        categories,
    )  # fmt: skip
    return load_split(yaml, "val")


def test_images_without_annotations_count_their_false_positives(mixed_set, tmp_path):
    gt = ground_truth_from_set(mixed_set)
    perfect = gt_as_detections(mixed_set)
    assert evaluate_results(gt, perfect).metrics["mAP50"] == pytest.approx(1.0)
    empty_id = next(s.image_id for s in mixed_set.samples if len(s.labels) == 0)
    # A confident person on the empty image ranks above the real person: AP50 for person drops to 1/2.
    with_fp = perfect + [{"image_id": empty_id, "category_id": 1, "bbox": [10, 10, 50, 50], "score": 2.0}]
    ours = evaluate_results(gt, with_fp)
    reference = cocoeval_directly(mixed_set.annotation_file, with_fp, tmp_path)
    assert list(ours.metrics.values()) == [float(v) for v in reference.stats]
    assert ours.per_class[0].ap50 == pytest.approx(0.5, abs=0.01) and ours.metrics["mAP50"] < 1.0


def test_mixed_sizes_batched_equal_one_at_a_time_in_original_pixels(mixed_set, nano):
    model, config, _ = nano
    batched = run_inference(Predictor(model, config, "cpu", COCO_EVAL).detect_batch, mixed_set, mixed_set.category_ids, 3,
                            progress=False).results  # fmt: skip
    predictor = Predictor(model, config, "cpu", COCO_EVAL)
    for s in mixed_set.samples:
        ours = [r for r in batched if r["image_id"] == s.image_id]
        single = predictor.detect_batch([cv2.imread(str(s.image_path))])[0]  # batch of one, no padding to others
        assert len(ours) == len(single) == 100  # the cap, at conf 0.001
        np.testing.assert_allclose([r["score"] for r in ours], single.scores, atol=2e-5)
        np.testing.assert_allclose([r["bbox"] for r in ours], xyxy_to_coco_xywh(single.boxes), atol=2e-2)
        h, w = s.size
        xywh = np.array([r["bbox"] for r in ours])
        assert (xywh[:, :2] >= 0).all() and (xywh[:, 0] + xywh[:, 2] <= w + 1e-3).all()
        assert (xywh[:, 1] + xywh[:, 3] <= h + 1e-3).all() and (xywh[:, 2:] >= 0).all()


def test_evaluate_model_for_the_trainer_restores_train_mode(mixed_set, nano):
    model, config, _ = nano
    model.train()
    metrics = evaluate_model(model, config, mixed_set, batch_size=2, device="cpu")
    assert model.training and list(metrics) == list(METRIC_NAMES)
    assert all(-1.0 <= v <= 1.0 for v in metrics.values())


def test_shard_batches_cover_every_image_once_in_whole_batches():
    single = shard_batches(79, 8)
    parts = [shard_batches(79, 8, r, 3) for r in range(3)]
    assert sum(parts, []) == single and [len(p) for p in parts] == [3, 3, 4]
    assert shard_batches(3, 8, 1, 2) == [[0, 1, 2]] and shard_batches(3, 8, 0, 2) == []


def test_two_process_torchrun_equals_single_process_and_rescoring(coco_val, nano, tmp_path, capsys):
    from yolo4.cli import main

    _, _, weights = nano
    common = ["eval", "--data", "coco-mini", "--weights", str(weights), "--batch", "8"]
    # torchrun gives each rank one thread; the reference (this process, through the CLI's entry
    # point) runs with one too, because CPU conv kernels sum in a thread-count-dependent order
    # (last-digit differences in a few boxes).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main([*common, "--no-plots", "--out", str(tmp_path / "single")]) == 0
    finally:
        torch.set_num_threads(threads)
    torchrun = ("-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "yolo4")
    sharded = yolo4(*common, "--no-plots", "--out", tmp_path / "sharded", module=torchrun)
    assert sharded.returncode == 0, sharded.stderr
    assert "2 processes" in sharded.stdout and "79 images" in sharded.stdout

    results = (tmp_path / "single" / "results.json").read_bytes()
    assert results == (tmp_path / "sharded" / "results.json").read_bytes()
    one, two = (json.loads((tmp_path / d / "summary.json").read_text()) for d in ("single", "sharded"))
    assert one["metrics"] == two["metrics"] and one["per_class"] == two["per_class"]
    assert (one["processes"], two["processes"], one["images"], one["detections"]) == (1, 2, 79, 7900)
    assert one["settings"]["conf_threshold"] == 0.001 and one["settings"]["nms_iou_threshold"] == 0.65
    assert one["timing"]["images_per_s"] > 0 and "mAP50-95" in one["metrics"]

    capsys.readouterr()
    assert main(["eval", "--data", "coco-mini", "--results", str(tmp_path / "single" / "results.json"),
                 "--no-plots", "--out", str(tmp_path / "rescored")]) == 0  # fmt: skip
    assert json.loads((tmp_path / "rescored" / "summary.json").read_text())["metrics"] == one["metrics"]
    assert "Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ]" in capsys.readouterr().out


def test_bad_inputs_are_named(coco_val, tmp_path):
    shared_path("datasets", "bccd")
    not_coco = tmp_path / "not_coco.json"
    not_coco.write_text(json.dumps({"images": [], "labels": []}))
    with pytest.raises(EvalInputError, match="not_coco.json: not a COCO detection file"):
        ground_truth_from_json(not_coco)
    broken = tmp_path / "broken.json"
    broken.write_text('{"images": [')
    with pytest.raises(EvalInputError, match="broken.json:1: COCO annotation file is not valid JSON"):
        ground_truth_from_json(broken)

    gt = ground_truth_from_set(coco_val)
    good = {"image_id": coco_val.samples[0].image_id, "category_id": 1, "bbox": [1, 2, 3, 4], "score": 0.5}
    with pytest.raises(EvalInputError, match="entry 1: category_id 12 is not a category .*1-11, 13-25"):
        evaluate_results(gt, [good, {**good, "category_id": 12}])
    with pytest.raises(EvalInputError, match="entry 0: image_id 424242 is not an image"):
        evaluate_results(gt, [{**good, "image_id": 424242}])
    with pytest.raises(EvalInputError, match="not a COCO results file"):
        evaluate_results(gt, {"annotations": []})
    bccd = ground_truth_from_set(load_split(ROOT / "data" / "bccd.yaml", "val"))
    with pytest.raises(EvalInputError, match=r"the model's 4 classes are not the 3 categories .*only in the model: "
                                             r"a, b, c, d; only in the dataset: RBC, WBC, Platelets"):  # fmt: skip
        class_mapping(("a", "b", "c", "d"), bccd)
    with pytest.raises(EvalInputError, match=r"only in the dataset: .*motorcycle"):
        class_mapping(("a", "b", "c"), gt)

    results = tmp_path / "results.json"
    results.write_text(json.dumps([{**good, "category_id": 91}]))
    run = yolo4("eval", "--data", "coco-mini", "--results", results, "--out", tmp_path / "out")
    assert run.returncode == 2 and "category_id 91" in run.stderr and "Traceback" not in run.stderr


def test_class_mapping_by_position_by_name_or_an_error(coco_val):
    bccd = ground_truth_from_set(load_split(ROOT / "data" / "bccd.yaml", "val"))
    same = class_mapping(("RBC", "WBC", "Platelets"), bccd)
    assert same.category_ids == (1, 2, 3) and not same.by_name
    swapped = class_mapping(("platelets", "RBC", "WBC"), bccd)  # another order, another case: by name
    assert swapped.by_name and swapped.category_ids == (3, 1, 2)
    # Darknet's coco.names (motorbike, aeroplane, sofa, tvmonitor...) is COCO's 80 classes.
    from yolo4.core.presets import coco_class_names

    darknet = class_mapping(coco_class_names(), ground_truth_from_set(coco_val))
    assert darknet.category_ids == coco_val.category_ids and not darknet.by_name
    assert any("motorbike" in note for note in darknet.notes)


def test_missing_image_is_an_error_naming_the_file(tmp_path, nano):
    categories = [{"id": 1, "name": "person"}]
    yaml = write_coco_set(tmp_path, [("here.jpg", 64, 64)], [("here.jpg", 1, [1, 1, 10, 10])], categories)
    data = json.loads((tmp_path / "val.json").read_text())
    data["images"].append({"id": 2, "file_name": "gone.jpg", "height": 64, "width": 64})
    (tmp_path / "val.json").write_text(json.dumps(data))
    with pytest.raises(EvalInputError, match="gone.jpg: image file is missing"):
        check_images(load_split(yaml, "val"))
    run = yolo4("eval", "--data", yaml, "--weights", nano[2], "--out", tmp_path / "out")
    assert run.returncode == 2 and "gone.jpg: image file is missing" in run.stderr and "Traceback" not in run.stderr


def test_onnx_model_through_the_edge_runtime_matches_pytorch(mixed_set, nano, tmp_path):
    from yolo4.detector.export import export_onnx

    model, config, _ = nano
    onnx_file = export_onnx(model, config, tmp_path / "nano.onnx", img_size=224)
    yaml = mixed_set.annotation_file.parent / "set.yaml"
    run = yolo4("eval", "--data", yaml, "--onnx", onnx_file, "--batch", "2", "--out", tmp_path / "onnx")
    assert run.returncode == 0, run.stderr
    plots = sorted(p.name for p in (tmp_path / "onnx" / "pr_curves").glob("*.png"))  # the classes with ground truth + all
    assert plots == ["001_person.png", "003_car.png", "018_dog.png", "all_classes.png"], plots
    summary = json.loads((tmp_path / "onnx" / "summary.json").read_text())
    assert summary["model"]["source"].endswith("(fp32, ONNX Runtime)") and summary["images"] == 3
    onnx_results = json.loads((tmp_path / "onnx" / "results.json").read_text())
    torch_results = run_inference(Predictor(model, config, "cpu", COCO_EVAL).detect_batch, mixed_set,
                                  mixed_set.category_ids, 2, progress=False).results  # fmt: skip
    for s in mixed_set.samples:
        # Scores, not boxes: a random model has many exactly tied scores, which the two NMS
        # implementations may break differently.
        ours, ref = ([r["score"] for r in rs if r["image_id"] == s.image_id] for rs in (onnx_results, torch_results))
        assert len(ours) == len(ref) == 100
        np.testing.assert_allclose(sorted(ours), sorted(ref), atol=1e-4)
