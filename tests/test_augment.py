import numpy as np
import pytest
from yolo4.core.config import PreprocessConfig
from yolo4.training.augment import AugmentConfig, Augmenter
from yolo4.training.mixing import cutmix, mixup

COLORS = [(0, 0, 255), (0, 255, 0), (255, 0, 0), (0, 255, 255)]  # BGR per class


def one_rectangle_images(count=8, seed=0):
    rng = np.random.default_rng(seed)
    items = []
    for i in range(count):
        h, w = int(rng.integers(120, 200)), int(rng.integers(120, 260))
        image = np.full((h, w, 3), 60, np.uint8)
        bw, bh = int(rng.integers(30, w // 2)), int(rng.integers(30, h // 2))
        x1, y1 = int(rng.integers(0, w - bw)), int(rng.integers(0, h - bh))
        label = i % len(COLORS)
        image[y1 : y1 + bh, x1 : x1 + bw] = COLORS[label]
        items.append((image, np.array([[x1, y1, x1 + bw, y1 + bh]], np.float32), np.array([label])))
    return items


def colour_mask(image, label):
    return np.all(np.abs(image.astype(int) - np.array(COLORS[label])) < 60, axis=-1)


def assert_boxes_on_rectangles(image, boxes, labels):
    assert len(boxes) == len(labels)
    for box, label in zip(boxes, labels):
        x1, y1, x2, y2 = box
        assert 0 <= x1 < x2 <= image.shape[1] and 0 <= y1 < y2 <= image.shape[0]
        inside = colour_mask(image, label)[int(round(y1)) : int(round(y2)), int(round(x1)) : int(round(x2))]
        assert inside.mean() > 0.8, f"box {box} of class {label} is not on its rectangle"
        # The coloured pixels near the box fit it tightly (the box follows the rectangle).
        pad = 8
        wx1, wy1 = max(0, int(x1) - pad), max(0, int(y1) - pad)
        window = colour_mask(image, label)[wy1 : int(y2) + pad, wx1 : int(x2) + pad]
        ys, xs = np.nonzero(window)
        found = np.array([xs.min() + wx1, ys.min() + wy1, xs.max() + wx1 + 1, ys.max() + wy1 + 1])
        assert np.abs(found - box).max() <= 3.0, f"box {box} vs rectangle {found}"


@pytest.mark.parametrize("mosaic, fit", [(0.0, "cover"), (1.0, "cover"), (1.0, "contain"), (1.0, "inference")])
def test_boxes_stay_on_their_rectangles_through_mosaic_affine_and_flip(mosaic, fit):
    items = one_rectangle_images()
    config = AugmentConfig(mosaic=mosaic, mosaic_fit=fit, hue=0, saturation=0, brightness=0, flip=0.5, scale=(0.6, 1.4), translate=0.15)
    augmenter = Augmenter(lambda i: items[i], len(items), (160, 160), PreprocessConfig(), config)
    seen = 0
    for index in range(len(items)):
        image, boxes, labels = augmenter(index, np.random.default_rng(index))
        assert image.shape == (160, 160, 3) and image.dtype == np.uint8
        assert_boxes_on_rectangles(image, boxes, labels)
        seen += len(boxes)
    assert seen >= len(items) * (1.0 if mosaic else 0.5)  # mosaic shows rectangles of several images per sample


@pytest.mark.parametrize("resize", ["stretch", "letterbox"])
def test_mosaic_cells_fitted_for_inference_keep_objects_at_their_inference_size(resize):
    # 4:3 images (BCCD's 640x480) with a 20x20 square in the middle, to a 160x160 input: the
    # inference contract makes it 20x26.7 (stretch) or 20x20 (letterbox). A cell fitted for
    # inference keeps exactly that; "contain" keeps the aspect (20x20), "cover" fills the cell
    # (x 160/120). Cropping only shrinks a box, so the largest sides over many mosaics are uncut.
    image = np.full((120, 160, 3), 60, np.uint8)
    image[50:70, 70:90] = COLORS[0]
    item = (image, np.array([[70, 50, 90, 70]], np.float32), np.array([0]))
    still = dict(mosaic=1.0, scale=(1.0, 1.0), translate=0.0, hue=0, saturation=0, brightness=0, flip=0.0)
    contract = PreprocessConfig(resize=resize)
    largest = {}
    for fit in ("inference", "contain", "cover"):
        augmenter = Augmenter(lambda i: item, 1, (160, 160), contract, AugmentConfig(**still, mosaic_fit=fit))
        inference_box = augmenter.letterboxed(0)[1][0]
        sides = [b[:, 2:] - b[:, :2] for b in (augmenter(0, np.random.default_rng(s))[1] for s in range(40))]
        largest[fit] = np.concatenate(sides).max(axis=0)
    inference_wh = inference_box[2:] - inference_box[:2]
    np.testing.assert_allclose(inference_wh, [20.0, 26.667 if resize == "stretch" else 20.0], atol=0.01)
    np.testing.assert_allclose(largest["inference"], inference_wh, atol=0.5)
    np.testing.assert_allclose(largest["contain"], [20.0, 20.0], atol=0.5)
    np.testing.assert_allclose(largest["cover"], [26.67, 26.67], atol=0.5)
    with pytest.raises(ValueError, match="mosaic_fit"):
        AugmentConfig(mosaic_fit="fill")


def test_letterbox_path_matches_the_inference_contract():
    items = one_rectangle_images(1)
    augmenter = Augmenter(lambda i: items[i], 1, (128, 128), PreprocessConfig(pad_value=114), AugmentConfig())
    image, boxes, _ = augmenter.letterboxed(0)
    from yolo4.core.preprocess import resize_image

    expected, _ = resize_image(items[0][0], (128, 128), PreprocessConfig(pad_value=114))
    np.testing.assert_array_equal(image, expected)
    assert_boxes_on_rectangles(image, boxes, items[0][2])


def test_vertical_flip_mirrors_the_image_and_its_boxes_top_to_bottom():
    items = one_rectangle_images(4)
    still = dict(mosaic=0.0, scale=(1.0, 1.0), translate=0.0, hue=0, saturation=0, brightness=0, flip=0.0)
    flipped = Augmenter(lambda i: items[i], 4, (160, 160), PreprocessConfig(), AugmentConfig(**still, flip_vertical=1.0))
    for index in range(4):
        upright, upright_boxes, _ = flipped.letterboxed(index)
        image, boxes, labels = flipped(index, np.random.default_rng(index))
        np.testing.assert_array_equal(image, upright[::-1])
        expected = upright_boxes.copy()
        expected[:, [1, 3]] = 160 - upright_boxes[:, [3, 1]]
        np.testing.assert_allclose(boxes, expected, atol=1e-3)
        assert_boxes_on_rectangles(image, boxes, labels)
    unflipped = Augmenter(lambda i: items[i], 4, (160, 160), PreprocessConfig(), AugmentConfig(**still))
    np.testing.assert_array_equal(unflipped(0, np.random.default_rng(0))[0], unflipped.letterboxed(0)[0])


def test_cutmix_pastes_boxes_with_the_patch_and_drops_covered_ones():
    a = np.full((100, 100, 3), 60, np.uint8)
    a[10:30, 10:30] = COLORS[0]  # will stay visible
    a[60:80, 60:80] = COLORS[0]  # will be covered by the patch
    b = np.full((100, 100, 3), 60, np.uint8)
    b[40:90, 40:70] = COLORS[1]  # half inside the patch
    boxes_a = np.array([[10, 10, 30, 30], [60, 60, 80, 80]], np.float32)
    image, boxes, labels = cutmix(a, boxes_a, np.array([0, 0]), b, np.array([[40, 40, 70, 90]], np.float32),
                                  np.array([1]), rect=(50, 50, 100, 100))  # fmt: skip
    np.testing.assert_array_equal(boxes, [[10, 10, 30, 30], [50, 50, 70, 90]])
    assert labels.tolist() == [0, 1]
    assert_boxes_on_rectangles(image, boxes, labels)


def test_mixup_blends_and_keeps_both_sets_of_boxes():
    a, b = np.full((8, 8, 3), 200, np.uint8), np.full((8, 8, 3), 100, np.uint8)
    image, boxes, labels = mixup(a, np.ones((1, 4), np.float32), np.array([0]), b, np.zeros((2, 4), np.float32),
                                 np.array([1, 1]), ratio=0.25)  # fmt: skip
    assert image[0, 0, 0] == 125 and len(boxes) == 3 and labels.tolist() == [0, 1, 1]


def test_training_samples_are_reproducible_per_seed_epoch_and_index(tmp_path):
    from synthetic import write_voc
    from yolo4.core.datasets import load_split
    from yolo4.training.loader import TrainDataset

    samples = load_split(write_voc(tmp_path), "train").samples
    config = AugmentConfig(cutmix=0.5, mixup=0.5)
    a = TrainDataset(samples, (96, 96), PreprocessConfig(), config, seed=1)
    b = TrainDataset(samples, (96, 96), PreprocessConfig(), config, seed=1)
    for index in range(3):
        np.testing.assert_array_equal(a[index][0], b[index][0])
        np.testing.assert_array_equal(a[index][1], b[index][1])
    b.epoch = 1
    assert not np.array_equal(a[0][0], b[0][0])


@pytest.mark.parametrize("fit, shape", [("inference", (160, 160)), ("cover", (80, 80)), ("contain", (80, 80))])
def test_mosaic_drops_boxes_cut_below_min_visibility_at_the_cells_seams(fit, shape):
    """Albumentations' Mosaic crops each image to its cell and filters only that crop, so a box cut
    to a sliver at a seam would stay a whole object; ours keeps a box only if at least
    ``min_visibility`` of its area shows, counted here in pixels of the box's own colour."""
    h, w = shape
    side = 48 * h // 160  # 48 px in the 160 px cell
    items = []
    for k, (x, y) in enumerate([(h // 2, h // 2), (h // 8, h // 2), (h // 2, h // 8), (h // 4, h // 4)]):
        image = np.zeros((h, w, 3), np.uint8)
        image[y : y + side, x : x + side] = COLORS[k]
        items.append((image, np.array([[x, y, x + side, y + side]], np.float32), np.array([k])))
    checked = 0
    for threshold in (0.3, 0.7):
        augmenter = Augmenter(lambda i: items[i], 4, (160, 160), PreprocessConfig(), AugmentConfig(mosaic_fit=fit, min_visibility=threshold))
        load = augmenter.letterboxed if fit == "inference" else augmenter.load
        for t in range(30):
            image, boxes, labels = augmenter.mosaicked([load(i) for i in range(4)], np.random.default_rng(t))
            for k in range(4):
                visible = colour_mask(image, k).sum() / 48**2
                if abs(visible - threshold) > 0.05:  # away from the threshold, where resampling blurs the count
                    assert (k in labels) == (visible > threshold), (fit, t, k, visible)
                    checked += 1
    assert checked >= 200
