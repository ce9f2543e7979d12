"""The official COCO-trained yolov4-tiny (fetched and verified by ``yolo4 weights yolov4-tiny``;
``.ci/run`` caches it) against an implementation we did not write: OpenCV's Darknet importer,
for the network's outputs, the sample photo's detections and the COCO figures of ``yolo4 eval``
(OpenCV DNN + torchvision NMS + pycocotools called directly)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import CI, ROOT, shared_path
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torchvision.ops import batched_nms, box_iou

from yolo4.commands.weights import cached_weights
from yolo4.core.config import DETECT
from yolo4.detector.decode import DecodedModel
from yolo4.detector.loading import load_darknet
from yolo4.detector.neck import DARKNET_HEAD_ORDER
from yolo4.detector.predictor import Predictor

DOG = ROOT / "data" / "samples" / "dog.jpg"


@pytest.fixture(scope="module")
def weights() -> Path:
    path = cached_weights("yolov4-tiny")
    if path is None:
        if CI:
            raise FileNotFoundError("the official yolov4-tiny.weights is not cached: .ci/run runs `yolo4 weights yolov4-tiny`")
        pytest.skip("run `yolo4 weights yolov4-tiny` first (the official COCO weights, verified)")
    return path


@pytest.fixture(scope="module")
def cfg(tmp_path_factory) -> Path:
    """The official cfg with the [yolo] layers' thresh near 0: OpenCV zeroes class scores under
    it (0.2 by default, Darknet's drawing threshold), which COCO scoring at 0.001 must see."""
    text = shared_path("darknet", "yolov4-tiny.cfg").read_text()
    path = tmp_path_factory.mktemp("cfg") / "yolov4-tiny.cfg"
    path.write_text(text.replace("[yolo]\n", "[yolo]\nthresh=0\n"))
    return path


@pytest.fixture(scope="module")
def ours(weights):
    return load_darknet(shared_path("darknet", "yolov4-tiny.cfg"), weights)


def opencv_rows(net: cv2.dnn.Net, image: np.ndarray, size: int) -> np.ndarray:
    """OpenCV's decoded rows ``(N, 5 + C)``: cx, cy, w, h normalised to the input, objectness,
    objectness x class probability; heads in cfg order."""
    net.setInput(cv2.dnn.blobFromImage(image, 1 / 255.0, (size, size), swapRB=True, crop=False))
    return net.forward(net.getUnconnectedOutLayersNames())


@pytest.mark.parametrize("size", [416, 608])
def test_real_weights_match_opencv(size, weights, cfg, ours):
    image = cv2.imread(str(DOG))
    net = cv2.dnn.readNetFromDarknet(str(cfg), str(weights))
    theirs = opencv_rows(net, image, size)
    blob = cv2.dnn.blobFromImage(image, 1 / 255.0, (size, size), swapRB=True, crop=False)
    with torch.no_grad():
        mine_all = DecodedModel(ours.model, ours.config).eval()(torch.from_numpy(blob))[0].numpy()
    config = ours.config
    A = config.num_anchors
    counts = [A * (size // h.stride) ** 2 for h in config.heads]
    starts = np.cumsum([0] + counts)
    for out, head in zip(theirs, DARKNET_HEAD_ORDER[config.arch]):
        g = size // config.heads[head].stride
        mine = mine_all[starts[head] : starts[head + 1]].reshape(A, g, g, -1).transpose(1, 2, 0, 3).reshape(-1, mine_all.shape[1])
        assert np.abs(mine[:, :4] / size - out[:, :4]).max() <= 1e-4  # boxes
        assert np.abs(mine[:, 4] - out[:, 4]).max() <= 1e-4  # objectness
        assert np.abs(mine[:, 5:] * mine[:, 4:5] - out[:, 5:]).max() <= 5e-4  # class probabilities (x objectness)
        assert out[:, 5:].max() > 0.5  # real weights: confident classes, not a comparison of noise


def opencv_detections(net, image, size, conf, iou, max_det) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The independent pipeline: OpenCV DNN, best class per box, torchvision's class-aware NMS,
    boxes back to original pixels (Darknet stretches the image to the input)."""
    rows = np.concatenate(opencv_rows(net, image, size))
    scores, classes = rows[:, 5:].max(axis=1), rows[:, 5:].argmax(axis=1)
    keep = scores >= conf
    rows, scores, classes = rows[keep], scores[keep], classes[keep]
    h, w = image.shape[:2]
    cx, cy, bw, bh = rows[:, 0] * w, rows[:, 1] * h, rows[:, 2] * w, rows[:, 3] * h
    boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1).clip(0, [w, h, w, h]).astype(np.float32)
    kept = batched_nms(torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(classes), iou)[:max_det].numpy()
    return boxes[kept], scores[kept], classes[kept]


def test_dog_gives_dog_bicycle_and_truck_where_opencv_finds_them(weights, cfg, ours):
    image = cv2.imread(str(DOG))
    dets = Predictor(ours.model, ours.config, "cpu", DETECT).detect(image)
    labels = set(dets.class_names)
    assert {"dog", "bicycle"} <= labels and labels & {"truck", "car"}, dets.class_names
    boxes, scores, classes = opencv_detections(cv2.dnn.readNetFromDarknet(str(cfg), str(weights)), image, 416,
                                               DETECT.conf, DETECT.iou, DETECT.max_det)  # fmt: skip
    assert sorted(classes.tolist()) == sorted(dets.class_ids.tolist())
    iou = box_iou(torch.from_numpy(dets.boxes), torch.from_numpy(boxes.astype(np.float32)))
    for i, cls in enumerate(dets.class_ids):
        same = torch.from_numpy(classes == cls)
        assert iou[i][same].max() > 0.7, ours.config.class_names[cls]


def test_yolo4_eval_equals_the_independent_pipeline(weights, cfg, tmp_path):
    from yolo4.cli import main

    data = shared_path("datasets", "coco-mini")
    assert main(["eval", "--data", "coco-mini", "--cfg", str(shared_path("darknet", "yolov4-tiny.cfg")),
                 "--weights", str(weights), "--no-plots", "--out", str(tmp_path / "ours")]) == 0  # fmt: skip
    ours = json.loads((tmp_path / "ours" / "summary.json").read_text())["metrics"]

    annotations = data / "annotations" / "instances_val2017.json"
    gt = COCO(str(annotations))
    category_ids = sorted(gt.getCatIds())
    net = cv2.dnn.readNetFromDarknet(str(cfg), str(weights))
    results = []
    for image_id in sorted(gt.getImgIds()):
        info = gt.loadImgs(image_id)[0]
        image = cv2.imread(str(data / "val2017" / info["file_name"]))
        for box, score, cls in zip(*opencv_detections(net, image, 416, 0.001, 0.65, 100)):
            x1, y1, x2, y2 = (float(v) for v in box)
            results.append({"image_id": image_id, "category_id": category_ids[int(cls)],
                            "bbox": [x1, y1, x2 - x1, y2 - y1], "score": float(score)})  # fmt: skip
    evaluator = COCOeval(gt, gt.loadRes(results), "bbox")
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    theirs = {"mAP50-95": evaluator.stats[0], "mAP50": evaluator.stats[1]}
    for key in ("mAP50-95", "mAP50"):
        assert abs(ours[key] - theirs[key]) <= 0.002, (key, ours[key], theirs[key])
    assert ours["mAP50"] > 0.4  # the official weights, not noise


def test_fine_tuning_starts_from_the_coco_weights_and_lowers_the_loss(weights, monkeypatch):
    """Transfer to BCCD's 3 classes: every non-class weight is COCO's, the carried box rows already
    localise cells better than a fresh model's, and a few steps on four images lower the loss."""
    from conftest import SHARED
    from dataclasses import replace

    from yolo4.core.datasets import load_split
    from yolo4.detector.loading import load_darknet_preset
    from yolo4.training.loader import TrainDataset, collate
    from yolo4.training.loss import yolo_loss
    from yolo4.training.setup import initial_model
    from yolo4.training.config import TrainConfig, apply_overrides

    monkeypatch.setenv("YOLO4_SHARED", str(SHARED))
    bccd = load_split("bccd", "train")
    four = replace(bccd, samples=bccd.samples[:4])
    tuned = initial_model(TrainConfig(data="bccd", model="yolov4-tiny", weights=str(weights), img_size=320), four)
    fresh = initial_model(TrainConfig(data="bccd", model="yolov4-tiny", img_size=320), four)
    assert tuned.fine_tune and not fresh.fine_tune
    # Scaled-YOLOv4's form; the recipe's grid sensitivity 2 brings neighbour-cell positives.
    assert tuned.loss.reduction == "mean" and tuned.loss.neighbor_cells
    assert [h.scale_x_y for h in tuned.config.heads] == [2.0, 2.0]
    own_decode = initial_model(apply_overrides(TrainConfig(data="bccd", model="yolov4-tiny", weights=str(weights),
                                                           img_size=320), ["scale_x_y=0"]), four)  # fmt: skip
    assert [h.scale_x_y for h in own_decode.config.heads] == [1.05, 1.05] and not own_decode.loss.neighbor_cells
    coco = load_darknet_preset("yolov4-tiny", weights).model.state_dict()
    own = tuned.model.state_dict()
    assert [k for k in own if not torch.equal(own[k], coco[k])] == ["heads.0.pred.weight", "heads.0.pred.bias",
                                                                    "heads.1.pred.weight", "heads.1.pred.bias"]  # fmt: skip
    dataset = TrainDataset(four.samples, (320, 320), tuned.config.preprocess, replace(TrainConfig().augment, mosaic=0.0))
    images, targets = collate([dataset[i] for i in range(4)], tuned.config.preprocess)

    def losses(start):
        return yolo_loss(start.model(images), targets, start.config, start.loss)

    with torch.no_grad():
        tuned.model.eval(), fresh.model.eval()
        assert losses(tuned)["box"] < 0.95 * losses(fresh)["box"]  # 0.48 vs 0.53 measured
    tuned.model.train()
    optimizer = torch.optim.AdamW(tuned.model.parameters(), lr=1e-3)
    totals = []
    for _ in range(4):
        loss = losses(tuned)["total"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        totals.append(loss.item())
    assert totals[-1] < 0.9 * totals[0], totals
