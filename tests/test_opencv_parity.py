"""Our model vs OpenCV's Darknet importer (an implementation we did not write) on the same
random Darknet weights and a real photo."""


import cv2
import numpy as np
import pytest
import torch
from darknet_files import write_random_weights
from yolo4.detector.decode import DecodedModel
from yolo4.detector.loading import load_darknet
from yolo4.detector.neck import DARKNET_HEAD_ORDER


@pytest.fixture(scope="module")
def weights(tmp_path_factory, darknet_dir):
    folder = tmp_path_factory.mktemp("weights")
    paths = {}
    for name in ("yolov4-tiny", "yolov4"):
        paths[name] = folder / f"{name}.weights"
        write_random_weights(load_darknet(darknet_dir / f"{name}.cfg", None).model, paths[name], seed=7)
    return paths


@pytest.mark.parametrize("name", ["yolov4-tiny", "yolov4"])
@pytest.mark.parametrize("size", [416, 608])
def test_decoded_outputs_match_opencv(name, size, weights, darknet_dir, images_dir):
    cfg = darknet_dir / f"{name}.cfg"
    image = cv2.imread(str(images_dir / "dog.jpg"))
    blob = cv2.dnn.blobFromImage(image, 1 / 255.0, (size, size), swapRB=True, crop=False)
    net = cv2.dnn.readNetFromDarknet(str(cfg), str(weights[name]))
    net.setInput(blob)
    theirs = net.forward(net.getUnconnectedOutLayersNames())  # per [yolo] in cfg order: (H*W*A, 5+C)

    loaded = load_darknet(cfg, weights[name])
    with torch.no_grad():
        ours = DecodedModel(loaded.model, loaded.config).eval()(torch.from_numpy(blob))[0].numpy()

    config = loaded.config
    A, C = config.num_anchors, config.num_classes
    counts = [A * (size // h.stride) ** 2 for h in config.heads]
    starts = np.cumsum([0] + counts)
    assert ours.shape == (sum(counts), 5 + C)
    for out, head in zip(theirs, DARKNET_HEAD_ORDER[config.arch]):
        g = size // config.heads[head].stride
        # ours: (A, H, W) order in input pixels; OpenCV: (H, W, A) rows, normalised to the input
        mine = ours[starts[head] : starts[head + 1]].reshape(A, g, g, 5 + C).transpose(1, 2, 0, 3).reshape(-1, 5 + C)
        assert out.shape == mine.shape
        assert np.abs(mine[:, :4] / size - out[:, :4]).max() <= 1e-3
        assert np.abs(mine[:, 4] - out[:, 4]).max() <= 1e-3
        assert out[:, 4].std() > 0.01  # the comparison is not between constants
