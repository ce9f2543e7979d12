import math

import numpy as np
import pytest
import torch
from yolo4.training.anchors import kmeans_anchors, mean_best_iou
from yolo4.training.augment import AugmentConfig
from yolo4.training.config import TrainConfig, apply_overrides, load_hyp
from yolo4.training.ema import ModelEMA
from yolo4.training.schedule import dropblock_probability, learning_rate
from yolo4.training.setup import apply_darknet_recipe, build_optimizer


def test_overrides_are_typed_and_checked(tmp_path):
    config = apply_overrides(TrainConfig(), ["epochs=5", "augment.cutmix=0.5", "loss.iou_loss=diou",
                                             "augment.scale=0.3,1.2", "weights=none", "ema=false"])  # fmt: skip
    assert (config.epochs, config.augment.cutmix, config.loss, config.augment.scale) == (5, 0.5, {"iou_loss": "diou"}, (0.3, 1.2))
    assert config.weights is None and config.ema is False
    assert TrainConfig.from_dict(config.to_dict()) == config
    for bad, message in [("epochs=abc", "expected int"), ("nope=1", "unknown training setting 'nope'"),
                         ("loss.foo=1", "unknown loss setting 'foo'"), ("epochs", "key=value")]:  # fmt: skip
        with pytest.raises(ValueError, match=message):
            apply_overrides(TrainConfig(), [bad])
    hyp = tmp_path / "hyp.yaml"
    hyp.write_text("lr: 0.02\naugment:\n  mosaic: 0.5\nloss:\n  label_smoothing: 0.1\n")
    config = apply_overrides(TrainConfig(), load_hyp(hyp))
    assert (config.lr, config.augment.mosaic, config.loss) == (0.02, 0.5, {"label_smoothing": 0.1})


def test_image_size_is_a_side_or_width_by_height():
    from yolo4.core.config import parse_image_size

    assert parse_image_size(416) == parse_image_size("416") == (416, 416)
    assert parse_image_size("512x384") == parse_image_size(" 512X384 ") == parse_image_size((384, 512)) == (384, 512)
    for bad in ["512x100", "abc", "0", "512x384x2", "x384", (1, 2, 3)]:
        with pytest.raises(ValueError, match="image size"):
            parse_image_size(bad)
    config = apply_overrides(TrainConfig(), ["img_size=512x384"])
    assert config.input_size == (384, 512) and config.img_size == "512x384"  # config.yaml reads as it was typed
    assert TrainConfig.from_dict(config.to_dict()) == config
    assert apply_overrides(TrainConfig(), ["img_size=512"]).img_size == 512
    with pytest.raises(ValueError, match="multiple of 32"):
        TrainConfig(img_size=500)


def test_darknet_recipe_applies_unless_overridden(darknet_dir):
    from yolo4.detector.darknet_cfg import read_cfg

    _, recipe = read_cfg(darknet_dir / "yolov4-tiny.cfg")
    config = apply_darknet_recipe(apply_overrides(TrainConfig(), ["momentum=0.95", "lr=0.05"]), vars(recipe))
    assert (config.lr, config.momentum) == (0.05, 0.95)  # set by the user: kept
    # A default given deliberately is kept too (it would otherwise look like "not set").
    deliberate = apply_darknet_recipe(apply_overrides(TrainConfig(), ["lr=0.002", "optimizer=adamw"]), vars(recipe))
    assert (deliberate.lr, deliberate.optimizer, deliberate.momentum) == (0.002, "adamw", 0.9)
    assert (config.warmup_iters, config.weight_decay) == (1000, 0.0005)
    config = apply_darknet_recipe(TrainConfig(), vars(recipe))
    assert (config.optimizer, config.lr, config.momentum) == ("sgd", 0.00261, 0.9)  # yolov4-tiny.cfg's own values


def test_fine_tune_recipe_applies_unless_overridden():
    from yolo4.training.config import FINE_TUNE
    from yolo4.training.setup import apply_fine_tune_recipe

    config = apply_fine_tune_recipe(TrainConfig())
    assert (config.lr, config.warmup_epochs) == (FINE_TUNE["lr"], FINE_TUNE["warmup_epochs"]) != (TrainConfig().lr, TrainConfig().warmup_epochs)
    assert (config.scale_x_y, config.augment.mosaic_fit) == (FINE_TUNE["scale_x_y"], FINE_TUNE["augment.mosaic_fit"])
    assert config.augment.mosaic_fit != TrainConfig().augment.mosaic_fit
    assert config.augment.scale == FINE_TUNE["augment.scale"] != TrainConfig().augment.scale
    assert (config.ema_decay, config.ema_tau) == (FINE_TUNE["ema_decay"], FINE_TUNE["ema_tau"]) != (TrainConfig().ema_decay, TrainConfig().ema_tau)
    deliberate = apply_fine_tune_recipe(apply_overrides(TrainConfig(), [f"lr={TrainConfig().lr}"]))  # the default, given
    assert (deliberate.lr, deliberate.warmup_epochs) == (TrainConfig().lr, FINE_TUNE["warmup_epochs"])
    # One augment key given keeps that key only; the recipe's other augment keys still apply.
    own = apply_fine_tune_recipe(apply_overrides(TrainConfig(), ["augment.mosaic_fit=cover", "augment.flip=0.1", "scale_x_y=0"]))
    assert (own.augment.mosaic_fit, own.augment.flip, own.scale_x_y) == ("cover", 0.1, 0.0)
    other = apply_fine_tune_recipe(apply_overrides(TrainConfig(), ["augment.flip=0.1"]))
    assert (other.augment.mosaic_fit, other.augment.flip) == (FINE_TUNE["augment.mosaic_fit"], 0.1)
    assert TrainConfig(augment=AugmentConfig(mosaic_fit="contain")).was_given("augment.mosaic_fit")  # untracked: by value


def test_learning_rate_schedule():
    lr = lambda i, **kw: learning_rate(i, 1000, 0.01, 100, **kw)  # noqa: E731
    assert lr(0) == 0 and lr(50) == pytest.approx(0.01 * 0.5**4)  # Darknet burn-in, power 4
    assert lr(100) == pytest.approx(0.01) and lr(1000) == pytest.approx(0.0005)
    assert lr(550) == pytest.approx(0.01 * (0.05 + 0.95 * 0.5))  # cosine midpoint
    assert lr(799, schedule="step") == 0.01 and lr(800, schedule="step") == pytest.approx(0.001)
    assert lr(950, schedule="step") == pytest.approx(0.0001)
    assert dropblock_probability(0, 100, 0.1) == 0 and dropblock_probability(50, 100, 0.1) == pytest.approx(0.05)
    assert dropblock_probability(200, 100, 0.1) == pytest.approx(0.1)


def test_no_weight_decay_on_batchnorm_and_biases():
    from yolo4.core.presets import yolov4_nano
    from yolo4.detector.model import build_model

    model = build_model(yolov4_nano())
    decayed, free = build_optimizer(model, TrainConfig(weight_decay=5e-4)).param_groups
    assert decayed["weight_decay"] == 5e-4 and free["weight_decay"] == 0
    assert all(p.ndim == 4 for p in decayed["params"]) and all(p.ndim == 1 for p in free["params"])
    assert len(decayed["params"]) + len(free["params"]) == len(list(model.parameters()))


def test_ema_follows_the_warmed_up_decay():
    model = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.constant_(model.weight, 0.0)
    ema = ModelEMA(model, decay=0.9)
    torch.nn.init.constant_(model.weight, 1.0)
    ema.update(model)
    d = 0.9 * (1 - math.exp(-1 / 2000))
    assert ema.module.weight.item() == pytest.approx(1 - d)
    short = ModelEMA(torch.nn.Linear(1, 1, bias=False).requires_grad_(False), decay=0.9, tau=10)
    torch.nn.init.constant_(short.module.weight, 0.0)
    for _ in range(3):  # a short ramp: after 3 steps the average holds prod(d_k) of the start
        short.update(model)
    kept = math.prod(0.9 * (1 - math.exp(-k / 10)) for k in (1, 2, 3))
    assert short.module.weight.item() == pytest.approx(1 - kept)


def test_kmeans_recovers_clusters():
    rng = np.random.default_rng(0)
    centres = np.array([[10, 10], [30, 60], [120, 90]], float)
    wh = np.concatenate([c * rng.uniform(0.95, 1.05, (200, 2)) for c in centres])
    anchors = kmeans_anchors(wh, 3)
    np.testing.assert_allclose(anchors, centres, rtol=0.05)
    assert mean_best_iou(wh, anchors) > 0.9 > mean_best_iou(wh, anchors[:1])


def test_fresh_models_get_k_means_anchors_of_their_dataset(tmp_path):
    from synthetic import write_voc
    from yolo4.core.datasets import load_split
    from yolo4.training.anchors import kmeans_anchors
    from yolo4.training.setup import initial_model

    train = load_split(write_voc(tmp_path, count=6), "train")
    config = initial_model(TrainConfig(img_size=128, anchors="auto"), train).config
    wh = np.concatenate([(s.boxes[:, 2:] - s.boxes[:, :2]) * (128 / 128) for s in train.samples])
    expected = kmeans_anchors(wh.astype(np.float64), 9).round(1)
    assert np.allclose([a for h in config.heads for a in h.anchors], expected)
    assert [h.stride for h in config.heads] == [8, 16, 32]
    preset_config = initial_model(TrainConfig(img_size=128, anchors="keep"), train).config
    assert preset_config.heads[0].anchors[0] == (round(12 * 128 / 608, 1), round(16 * 128 / 608, 1))


@pytest.mark.parametrize("resize", ["stretch", "letterbox"])
def test_k_means_anchors_fit_the_boxes_as_resized_at_inference(tmp_path, resize):
    """A stretched 128x96 image grows its boxes' heights by 4/3 more than their widths: the
    anchors must be fitted to those shapes, which the model is trained and run on."""
    from dataclasses import replace

    import cv2
    from synthetic import write_voc
    from yolo4.core.datasets import load_split
    from yolo4.core.preprocess import resize_image
    from yolo4.core.presets import preset
    from yolo4.training.setup import with_dataset_anchors

    train = load_split(write_voc(tmp_path, count=6), "train")
    base = preset("yolov4-tiny", ("red", "green")).replace(input_size=(128, 128))
    model_config = base.replace(preprocess=replace(base.preprocess, resize=resize))
    resized = []
    for s in train.samples:
        _, t = resize_image(cv2.imread(str(s.image_path)), (128, 128), model_config.preprocess)
        resized.append((s.boxes[:, 2:] - s.boxes[:, :2]) * [t.scale_x, t.scale_y])
    expected = kmeans_anchors(np.concatenate(resized).astype(np.float64), 6).round(1)
    fitted = with_dataset_anchors(model_config, train)
    assert np.allclose([a for h in fitted.heads for a in h.anchors], expected)


def test_multiscale_rescales_images_and_boxes_together():
    from yolo4.training.multiscale import random_rescale

    images = torch.zeros(2, 3, 128, 96)
    images[0, :, 32:64, 48:72] = 1.0  # a bright box at x 48-72, y 32-64
    targets = torch.tensor([[0, 0, 48.0, 32.0, 72.0, 64.0]])
    sizes = set()
    for iteration in range(6):
        out, scaled = random_rescale(images, targets, iteration, seed=0)
        h, w = out.shape[-2:]
        sizes.add((h, w))
        assert h % 32 == 0 and w % 32 == 0 and 64 <= h <= 192
        x1, y1, x2, y2 = scaled[0, 2:].tolist()
        assert (x1, x2) == pytest.approx((48 * w / 96, 72 * w / 96)) and (y1, y2) == pytest.approx((32 * h / 128, 64 * h / 128))
        inside = out[0, 0, int(y1) + 1 : int(y2) - 1, int(x1) + 1 : int(x2) - 1]
        assert inside.min() > 0.5  # the box still covers the bright region
    assert len(sizes) > 1
    same, _ = random_rescale(images, targets, 3, seed=0)
    assert same.shape == random_rescale(images, targets, 3, seed=0)[0].shape  # reproducible per iteration


@pytest.mark.parametrize("refit", [False, True])
def test_new_classes_keep_everything_but_the_class_rows_and_predict_the_same_boxes(refit):
    from dataclasses import replace

    from yolo4.core.presets import preset
    from yolo4.detector.decode import DecodedModel
    from yolo4.detector.model import build_model
    from yolo4.training.transfer import transfer

    torch.manual_seed(0)
    coco = preset("yolov4-tiny", input_size=(128, 128))
    source = build_model(coco).eval()
    for p in source.parameters():  # a trained model's rows are not the fresh init
        p.data.normal_(0, 0.05)
    heads = coco.heads
    if refit:  # anchors fitted to another dataset: each head's rows follow its anchors
        heads = tuple(replace(h, anchors=tuple((w * 0.7, hh * 1.2) for w, hh in h.anchors)) for h in heads)
    config = coco.with_classes(("RBC", "WBC", "Platelets")).replace(heads=heads)
    target = build_model(config).eval()
    fresh_class_bias = target.heads[0].pred.bias.view(3, 8)[:, 5:].clone()
    kept, total = transfer(source, target)
    assert (kept, total) == (len(target.state_dict()) - 4, len(target.state_dict()))  # pred weight+bias of 2 heads
    for name, value in target.state_dict().items():
        if ".pred." not in name:
            assert torch.equal(value, source.state_dict()[name]), name  # backbone, neck, head convs
    images = torch.rand(2, 3, 128, 128)
    with torch.no_grad():
        before, after = DecodedModel(source, coco)(images), DecodedModel(target, config)(images)
    torch.testing.assert_close(after[..., :5], before[..., :5], rtol=1e-4, atol=1e-3)  # boxes and objectness
    assert torch.equal(target.heads[0].pred.bias.view(3, 8)[:, 5:], fresh_class_bias)  # only these start fresh


def test_a_new_grid_sensitivity_keeps_the_predicted_boxes_and_turns_on_neighbour_cell_positives():
    from yolo4.core.presets import preset
    from yolo4.detector.decode import DecodedModel
    from yolo4.detector.model import build_model
    from yolo4.training.loss_config import scaled_loss
    from yolo4.training.setup import with_grid_sensitivity
    from yolo4.training.transfer import transfer

    torch.manual_seed(0)
    coco = preset("yolov4-tiny", input_size=(128, 128))
    source = build_model(coco).eval()
    for p in source.parameters():  # a trained model's rows are not the fresh init
        p.data.normal_(0, 0.05)
    config = with_grid_sensitivity(coco.with_classes(("RBC", "WBC", "Platelets")), 2.0)
    assert [h.scale_x_y for h in coco.heads] == [1.05, 1.05] and [h.scale_x_y for h in config.heads] == [2.0, 2.0]
    assert not scaled_loss(coco).neighbor_cells and scaled_loss(config).neighbor_cells
    target = build_model(config).eval()
    transfer(source, target)
    images = torch.rand(2, 3, 128, 128)
    with torch.no_grad():
        before, after = DecodedModel(source, coco)(images), DecodedModel(target, config)(images)
    # The centres move by well under a pixel (the offset rows were scaled by 1.05 / 2); unscaled
    # rows would move them by about (2 - 1.05) * |sigmoid(t) - 0.5| * stride, pixels.
    torch.testing.assert_close(after[..., :2], before[..., :2], rtol=0, atol=0.05)
    torch.testing.assert_close(after[..., 2:5], before[..., 2:5], rtol=1e-4, atol=1e-3)
    assert with_grid_sensitivity(coco, 0.0) is coco
    with pytest.raises(ValueError, match="at least 1"):
        with_grid_sensitivity(coco, 0.5)


def test_scale_x_y_setting_reaches_the_model_and_its_loss(tmp_path):
    from synthetic import write_voc
    from yolo4.core.datasets import load_split
    from yolo4.training.setup import initial_model

    train = load_split(write_voc(tmp_path, count=4), "train")
    start = initial_model(apply_overrides(TrainConfig(img_size=128, model="yolov4-tiny", loss_form="scaled"), ["scale_x_y=2"]), train)
    assert [h.scale_x_y for h in start.config.heads] == [2.0, 2.0] == [h.scale_x_y for h in start.model.config.heads]
    assert start.loss.neighbor_cells
    default = initial_model(TrainConfig(img_size=128, model="yolov4-tiny", loss_form="scaled"), train)
    assert [h.scale_x_y for h in default.config.heads] == [1.05, 1.05] and not default.loss.neighbor_cells


@pytest.mark.parametrize("freeze_epochs", [0, 1])
def test_freeze_stages_keeps_the_leading_backbone_parts_fixed_through_a_thaw(freeze_epochs):
    from yolo4.core.presets import preset
    from yolo4.detector.model import build_model
    from yolo4.training.setup import set_frozen

    torch.manual_seed(0)
    model = build_model(preset("yolov4-tiny", class_names=["a", "b"], input_size=(128, 128)))
    config = TrainConfig(freeze_stages=2, freeze_epochs=freeze_epochs)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = build_optimizer(model, config)
    for epoch in range(2):  # with freeze_epochs=1 the backbone thaws for the second epoch
        model.train()
        set_frozen(model, config, epoch < config.freeze_epochs)
        optimizer.zero_grad()
        sum(raw.square().mean() for raw in model(torch.randn(2, 3, 128, 128))).backward()
        optimizer.step()
    after = model.state_dict()
    changed = {k.split(".")[1] for k in after if k.startswith("backbone.") and not torch.equal(after[k], before[k])}
    # weights and BatchNorm statistics alike: the stem and the first block stay COCO's
    assert changed == {"block2", "block3", "head_conv"}
    assert not torch.equal(after["heads.0.pred.weight"], before["heads.0.pred.weight"])
    with pytest.raises(ValueError, match="only 5 parts"):
        set_frozen(model, TrainConfig(freeze_stages=6), False)


def test_collate_hands_the_trainer_channels_last_batches_equal_to_the_inference_tensor():
    """The training batch is the inference contract's tensor, already in channels_last memory
    (no transposing copy in the hot loop), with one target row per box."""
    from yolo4.core.preprocess import to_input_tensor
    from yolo4.core.presets import preset
    from yolo4.training.loader import collate

    contract = preset("yolov4-tiny", class_names=("a", "b"), input_size=(64, 96)).preprocess
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (64, 96, 3), dtype=np.uint8) for _ in range(3)]
    boxes = [np.array([[1, 2, 30, 40]], np.float32), np.zeros((0, 4), np.float32), np.array([[0, 0, 9, 9], [5, 5, 50, 60]], np.float32)]
    labels = [np.array([1]), np.zeros(0, np.int64), np.array([0, 1])]
    batch, targets = collate(list(zip(images, boxes, labels)), contract)
    assert batch.shape == (3, 3, 64, 96) and batch.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(batch, torch.from_numpy(to_input_tensor(images, contract)))
    assert targets[:, :2].tolist() == [[0, 1], [2, 0], [2, 1]] and targets[2, 2:].tolist() == [5, 5, 50, 60]
