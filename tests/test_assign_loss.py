import math

import pytest
import torch
from torch.nn import functional as F
from torchvision.ops import complete_box_iou
from yolo4.core.config import HeadConfig, ModelConfig
from yolo4.training.assign import anchor_shape_iou, assign_targets
from yolo4.training.loss import yolo_loss
from yolo4.training.loss_config import LossConfig, loss_for

# Two heads (strides 8 and 16), two anchors each, on a 64x64 input: grids 8x8 and 4x4.
ANCHORS = [torch.tensor([[8.0, 8.0], [16.0, 8.0]]), torch.tensor([[24.0, 24.0], [48.0, 40.0]])]
STRIDES, GRIDS = [8, 16], [(8, 8), (4, 4)]


def config(iou_thresh=1.0, ignore_thresh=0.7, classes=2, **loss) -> tuple[ModelConfig, LossConfig]:
    """A toy model and its loss settings: ``yolo_loss(raws, targets, *config(...))``."""
    heads = tuple(HeadConfig(s, tuple(map(tuple, a.tolist())), 1.0) for s, a in zip(STRIDES, ANCHORS))
    model = ModelConfig(name="toy", class_names=tuple(f"c{i}" for i in range(classes)), input_size=(64, 64), heads=heads)
    return model, LossConfig(iou_thresh=iou_thresh, ignore_thresh=ignore_thresh, **loss)


def positives(assigned):
    return [
        (h, int(i), int(a), int(y), int(x), int(c))
        for h, t in enumerate(assigned)
        for i, a, y, x, c in zip(t.image, t.anchor, t.grid_y, t.grid_x, t.classes)
    ]


def test_anchor_shape_iou_by_hand():
    iou = anchor_shape_iou(torch.tensor([[10.0, 20.0]]), torch.tensor([[10.0, 10.0], [20.0, 20.0]]))
    assert iou.tolist() == [[pytest.approx(0.5), pytest.approx(0.5)]]


def test_one_box_goes_to_its_best_anchor_and_centre_cell():
    # 16x8 box centred at (20, 30): best anchor is head 0 anchor 1, cell x=2, y=3.
    targets = torch.tensor([[0, 1, 12.0, 26.0, 28.0, 34.0]])
    assigned = assign_targets(targets, ANCHORS, STRIDES, GRIDS, iou_thresh=1.0)
    assert positives(assigned) == [(0, 0, 1, 3, 2, 1)]
    assert assigned[0].boxes.tolist() == [[12.0, 26.0, 28.0, 34.0]]


def test_box_matching_several_anchors_above_iou_thresh():
    # A 24x24 box: shape IoU 64/576 with (8,8), 128/576 with (16,8), 1 with (24,24), 576/1920 with (48,40).
    targets = torch.tensor([[0, 0, 20.0, 20.0, 44.0, 44.0]])
    iou = anchor_shape_iou(torch.tensor([[24.0, 24.0]]), torch.cat(ANCHORS))[0]
    assert iou.tolist() == pytest.approx([1 / 9, 2 / 9, 1.0, 0.3])
    one = positives(assign_targets(targets, ANCHORS, STRIDES, GRIDS, iou_thresh=1.0))
    assert one == [(1, 0, 0, 2, 2, 0)]
    several = positives(assign_targets(targets, ANCHORS, STRIDES, GRIDS, iou_thresh=0.213))
    assert several == [(0, 0, 1, 4, 4, 0), (1, 0, 0, 2, 2, 0), (1, 0, 1, 2, 2, 0)]


def test_two_boxes_in_one_cell():
    # Same cell, different best anchors: both are positives.
    small = [0, 0, 17.0, 17.0, 23.0, 23.0]  # 6x6 -> anchor (8,8)
    wide = [1, 1, 12.0, 16.0, 28.0, 24.0]  # 16x8 -> anchor (16,8), centre (20, 20) too
    got = positives(assign_targets(torch.tensor([small[:1] + [0] + small[2:], wide[:1] * 0 + [0, 1] + wide[2:]]),
                                   ANCHORS, STRIDES, GRIDS, 1.0))  # fmt: skip
    assert sorted(got) == [(0, 0, 0, 2, 2, 0), (0, 0, 1, 2, 2, 1)]
    # Same cell and same anchor: the box whose shape fits the anchor better keeps the slot.
    fits = [0, 1, 16.0, 16.0, 24.0, 24.0]  # 8x8, IoU 1 with (8,8)
    worse = [0, 0, 18.0, 18.0, 23.0, 23.0]  # 5x5, IoU 0.39 with (8,8)
    for order in ([worse, fits], [fits, worse]):
        got = positives(assign_targets(torch.tensor(order), ANCHORS, STRIDES, GRIDS, 1.0))
        assert got == [(0, 0, 0, 2, 2, 1)]


def test_empty_batch_has_only_background_objectness():
    cfg = config()
    torch.manual_seed(0)
    raws = [torch.randn(2, 2, h, w, 7) for h, w in GRIDS]
    terms = yolo_loss(raws, torch.zeros(0, 6), *cfg)
    assert terms["box"] == 0 and terms["cls"] == 0 and terms["positives"] == 0
    expected = sum(F.softplus(r[..., 4]).sum() for r in raws) / 2  # BCE(x, 0) = softplus(x)
    assert terms["obj"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert terms["total"].item() == pytest.approx(expected.item(), rel=1e-5)


def test_loss_terms_by_hand_for_one_positive():
    cfg = config(iou_normalizer=0.07, cls_normalizer=1.0, ignore_thresh=1.0)
    raws = [torch.zeros(1, 2, h, w, 7) for h, w in GRIDS]
    raws[0][0, 1, 3, 2] = torch.tensor([0.3, -0.2, 0.1, 0.2, 1.0, 2.0, -1.0])
    target_box = torch.tensor([[12.0, 26.0, 28.0, 34.0]])
    terms = yolo_loss(raws, torch.tensor([[0, 0, 12.0, 26.0, 28.0, 34.0]]), *cfg)
    # Decoded prediction at that slot (scale_x_y = 1): centre in cell (2, 3), anchor (16, 8).
    cx, cy = (torch.sigmoid(torch.tensor(0.3)) + 2) * 8, (torch.sigmoid(torch.tensor(-0.2)) + 3) * 8
    w, h = 16 * math.exp(0.1), 8 * math.exp(0.2)
    pred = torch.tensor([[cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]])
    ciou = complete_box_iou(pred, target_box)[0, 0]
    assert terms["box"].item() == pytest.approx(0.07 * (1 - ciou.item()), rel=1e-4)
    cls = F.binary_cross_entropy_with_logits(torch.tensor([2.0, -1.0]), torch.tensor([1.0, 0.0]), reduction="sum")
    assert terms["cls"].item() == pytest.approx(cls.item(), rel=1e-5)
    n_background = sum(2 * h * w for h, w in GRIDS) - 1
    obj = F.softplus(torch.tensor(-1.0)) + n_background * F.softplus(torch.tensor(0.0))  # BCE(1, 1) + zeros
    assert terms["obj"].item() == pytest.approx(obj.item(), rel=1e-5)


def test_predictions_overlapping_a_box_are_not_pushed_to_background():
    targets = torch.tensor([[0, 0, 12.0, 26.0, 28.0, 34.0]])  # positive: head 0, anchor 1, cell (3, 2)
    raws = [torch.zeros(1, 2, h, w, 7) for h, w in GRIDS]
    # Anchor 0 of the same cell predicts exactly the box (centre (20, 30), 16x8), confidently.
    raws[0][0, 0, 3, 2, :4] = torch.tensor([0.0, math.log(3.0), math.log(2.0), 0.0])
    raws[0][0, 0, 3, 2, 4] = 5.0
    ignoring = yolo_loss(raws, targets, *config(ignore_thresh=0.7))["obj"]
    not_ignoring = yolo_loss(raws, targets, *config(ignore_thresh=1.0))["obj"]
    assert not_ignoring - ignoring == pytest.approx(F.softplus(torch.tensor(5.0)).item(), rel=1e-4)


def test_label_smoothing_and_unsupported_iou_loss():
    raws = [torch.zeros(1, 2, h, w, 7) for h, w in GRIDS]
    targets = torch.tensor([[0, 0, 12.0, 26.0, 28.0, 34.0]])
    smooth = yolo_loss(raws, targets, *config(label_smoothing=0.2, ignore_thresh=1.0))["cls"]
    expected = F.binary_cross_entropy_with_logits(torch.zeros(2), torch.tensor([0.9, 0.1]), reduction="sum")
    assert smooth.item() == pytest.approx(expected.item(), rel=1e-5)
    with pytest.raises(ValueError, match="iou_loss must be one of"):
        config(iou_loss="mse")


def test_gradients_reach_every_head():
    from yolo4.core.presets import yolov4_nano
    from yolo4.detector.model import build_model

    cfg = yolov4_nano(class_names=["a", "b"], input_size=(128, 128))
    model = build_model(cfg)
    raws = model(torch.rand(2, 3, 128, 128))
    targets = torch.tensor([[0, 0, 10.0, 10.0, 30.0, 40.0], [1, 1, 20.0, 30.0, 120.0, 110.0]])
    yolo_loss(raws, targets, cfg, loss_for(cfg))["total"].backward()
    assert all(h.pred.weight.grad.abs().sum() > 0 for h in model.heads)


def test_neighbor_cells_add_the_nearer_cell_on_each_axis():
    # 16x8 box centred at (21, 27): cell (x=2, y=3), fractions (0.625, 0.375) -> neighbours x=3 and y=2.
    targets = torch.tensor([[0, 1, 13.0, 23.0, 29.0, 31.0]])
    assigned = assign_targets(targets, ANCHORS, STRIDES, GRIDS, iou_thresh=1.0, neighbor_cells=True)
    assert sorted(positives(assigned)) == [(0, 0, 1, 2, 2, 1), (0, 0, 1, 3, 2, 1), (0, 0, 1, 3, 3, 1)]
    # At the map's corner there is no neighbour outside it.
    corner = torch.tensor([[0, 1, 0.0, 0.0, 6.0, 6.0]])  # centre (3, 3): fractions < 0.5 at cell (0, 0)
    assert positives(assign_targets(corner, ANCHORS, STRIDES, GRIDS, 1.0, neighbor_cells=True)) == [(0, 0, 0, 0, 0, 1)]


def test_a_centre_cell_beats_another_boxs_neighbour_cell():
    # Box a's centre cell (2, 3) is box b's x-neighbour; same best anchor (8, 8).
    a = [0, 0, 18.0, 26.0, 24.0, 32.0]  # centre (21, 29): cell x=2, y=3
    b = [0, 1, 22.0, 26.0, 28.0, 32.0]  # centre (25, 29): cell x=3, fraction 0.125 -> neighbour x=2
    assigned = assign_targets(torch.tensor([a, b]), ANCHORS, STRIDES, GRIDS, 1.0, neighbor_cells=True)
    owner = {(y, x): c for _, _, _, y, x, c in positives(assigned)}
    assert owner[(3, 2)] == 0 and owner[(3, 3)] == 1


def test_mean_reduction_and_iou_objectness_by_hand():
    torch.manual_seed(0)
    cfg = config(ignore_thresh=1.0, reduction="mean", head_balance=(4.0, 0.5), objectness_smooth=1.0,
                 iou_normalizer=0.05, obj_normalizer=0.7, cls_normalizer=0.3)  # fmt: skip
    raws = [torch.randn(2, 2, 8, 8, 7), torch.randn(2, 2, 4, 4, 7)]
    targets = torch.tensor([[0, 1, 12.0, 26.0, 28.0, 34.0]])  # one positive: head 0, image 0, anchor 1, cell (3, 2)
    got = yolo_loss(raws, targets, *cfg)
    raw = raws[0][0, 1, 3, 2]
    sig = torch.sigmoid
    cx, cy = (sig(raw[0]) + 2) * 8, (sig(raw[1]) + 3) * 8
    w, h = torch.exp(raw[2]) * 16, torch.exp(raw[3]) * 8
    pred = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])[None]
    ciou = complete_box_iou(pred, targets[:, 2:])[0, 0]
    assert got["box"].item() == pytest.approx(0.05 * (1 - ciou.item()), rel=1e-5)
    obj = 0.0
    for i, (r, weight) in enumerate(zip(raws, (4.0, 0.5))):
        target = torch.zeros_like(r[..., 4])
        if i == 0:
            target[0, 1, 3, 2] = ciou.clamp(min=0)
        obj += weight * F.binary_cross_entropy_with_logits(r[..., 4], target)
    assert got["obj"].item() == pytest.approx(0.7 * obj.item(), rel=1e-5)
    cls = F.binary_cross_entropy_with_logits(raw[5:], torch.tensor([0.0, 1.0]))
    assert got["cls"].item() == pytest.approx(0.3 * cls.item(), rel=1e-5)


def test_head_balance_weighs_two_head_models_by_stride():
    """YOLOv5's objectness weights (4.0, 1.0, 0.4) belong to the stride 8, 16 and 32 heads: a model
    with two heads takes its strides' weights (yolov4-tiny's 16 and 32: 1.0 and 0.4), not equal ones."""
    assert LossConfig().head_weights([8, 16, 32]) == (4.0, 1.0, 0.4)
    assert LossConfig().head_weights([16, 32]) == (1.0, 0.4)
    assert LossConfig(head_balance=(2.0, 1.0)).head_weights([16, 32]) == (2.0, 1.0)  # one per head: as given
    assert LossConfig().head_weights([32, 64]) == (1.0, 1.0)  # a stride without a default weight: equal weights
    torch.manual_seed(0)
    raws = [torch.randn(2, 2, 8, 8, 7), torch.randn(2, 2, 4, 4, 7)]  # the toy's heads: strides 8 and 16
    got = yolo_loss(raws, torch.zeros(0, 6), *config(ignore_thresh=1.0, reduction="mean"))
    obj = sum(w * F.binary_cross_entropy_with_logits(r[..., 4], torch.zeros_like(r[..., 4])) for r, w in zip(raws, (4.0, 1.0)))
    assert got["obj"].item() == pytest.approx(obj.item(), rel=1e-5)
