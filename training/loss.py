"""The YOLOv4 loss with Darknet's rules (darknet/src/yolo_layer.c):

* box: ``(1 - CIoU)`` (or DIoU/GIoU) of positives, times ``iou_normalizer`` (0.07);
* objectness: BCE over every prediction, target 1 for positives and 0 elsewhere, except that
  predictions overlapping a ground truth above ``ignore_thresh`` (0.7) are not pushed to
  background; times ``obj_normalizer``;
* class: BCE of positives with optional label smoothing, times ``cls_normalizer``.

Like Darknet, terms are summed over predictions and averaged over images. With
``reduction="mean"`` (Scaled-YOLOv4) each head's terms are means instead (box and class over
its positives, objectness over all its predictions times ``head_balance``), optionally with
IoU-valued objectness targets (``objectness_smooth``) and neighbour-cell positives. Box decode is
``detector.decode.decode_head``, the same grid-sensitivity decode that inference uses.
CIoU: Zheng et al., https://arxiv.org/abs/1911.08287 (torchvision.ops implementation).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F
from torchvision.ops import box_convert, box_iou, complete_box_iou_loss, distance_box_iou_loss, generalized_box_iou_loss
from yolo4.core.config import ModelConfig
from yolo4.detector.decode import decode_head
from yolo4.training.assign import assign_targets
from yolo4.training.loss_config import LossConfig

BOX_LOSSES = {"ciou": complete_box_iou_loss, "diou": distance_box_iou_loss, "giou": generalized_box_iou_loss}


def yolo_loss(
    raws: list[torch.Tensor], targets: torch.Tensor, config: ModelConfig, loss: LossConfig
) -> dict[str, torch.Tensor]:
    """Loss of one batch.

    Args:
        raws: the model's raw maps, per head ``(B, A, H, W, 5 + C)``.
        targets: ``(M, 6)`` rows ``[image index, class, x1, y1, x2, y2]`` in input pixels.
        config: the model's config (anchors, strides, ``scale_x_y``).
        loss: loss settings (``yolo4.training.loss_config.loss_for``).

    Returns:
        ``{"box", "obj", "cls", "total"}`` scalars (per image, or means) and ``"positives"`` (count).
    """
    box_loss_fn = BOX_LOSSES[loss.iou_loss]
    batch = raws[0].shape[0]
    device = raws[0].device
    targets = targets.to(device)
    anchors = [torch.tensor(h.anchors, dtype=torch.float32, device=device) for h in config.heads]
    grid_sizes = [(r.shape[2], r.shape[3]) for r in raws]
    assigned = assign_targets(targets, anchors, list(config.strides), grid_sizes, loss.iou_thresh, loss.neighbor_cells)
    mean = loss.reduction == "mean"
    balance = loss.head_weights([h.stride for h in config.heads])

    box_term = obj_term = cls_term = torch.zeros((), device=device)
    positives = 0
    for raw, head, head_anchors, t, head_weight in zip(raws, config.heads, anchors, assigned, balance):
        raw = raw.float()
        decoded = decode_head(raw, head_anchors, head.stride, head.scale_x_y).view(*raw.shape)  # (B, A, H, W, 5+C)
        pred_xyxy = box_convert(decoded[..., :4], "cxcywh", "xyxy")

        ignore = _ignore_mask(pred_xyxy.detach(), targets, loss.ignore_thresh)  # (B, A, H, W) bool
        obj_target = torch.zeros_like(raw[..., 4])
        if len(t.image):
            slot = (t.image, t.anchor, t.grid_y, t.grid_x)
            box_losses = box_loss_fn(pred_xyxy[slot], t.boxes, reduction="none")  # (P,)
            quality = (1.0 - box_losses.detach()).clamp(min=0)  # the (C/D/G)IoU itself
            obj_target[slot] = (1 - loss.objectness_smooth) + loss.objectness_smooth * quality
            ignore[slot] = False
            box_term = box_term + (box_losses.mean() if mean else box_losses.sum())
            cls_target = F.one_hot(t.classes, config.num_classes).float()
            if loss.label_smoothing:
                cls_target = cls_target * (1 - loss.label_smoothing) + 0.5 * loss.label_smoothing
            cls_bce = F.binary_cross_entropy_with_logits(raw[slot][:, 5:], cls_target, reduction="none")
            cls_term = cls_term + (cls_bce.mean() if mean else cls_bce.sum())
            positives += len(t.image)
        obj_bce = F.binary_cross_entropy_with_logits(raw[..., 4], obj_target, reduction="none")
        kept = obj_bce * ~ignore
        obj_term = obj_term + (kept.sum() / kept.numel() * head_weight if mean else kept.sum())

    per_image = 1.0 if mean else 1.0 / batch
    box_term = box_term * loss.iou_normalizer * per_image
    obj_term = obj_term * loss.obj_normalizer * per_image
    cls_term = cls_term * loss.cls_normalizer * per_image
    return {
        "box": box_term,
        "obj": obj_term,
        "cls": cls_term,
        "total": box_term + obj_term + cls_term,
        "positives": torch.tensor(positives),
    }


def _ignore_mask(pred_xyxy: torch.Tensor, targets: torch.Tensor, ignore_thresh: float) -> torch.Tensor:
    """``(B, A, H, W)`` True where a prediction's best IoU with its image's boxes > threshold."""
    batch = pred_xyxy.shape[0]
    ignore = torch.zeros(pred_xyxy.shape[:-1], dtype=torch.bool, device=pred_xyxy.device)
    if ignore_thresh >= 1.0 or len(targets) == 0:
        return ignore
    flat = pred_xyxy.view(batch, -1, 4)
    for b in range(batch):
        gt = targets[targets[:, 0] == b, 2:6]
        if len(gt):
            ignore[b] = (box_iou(flat[b], gt).max(dim=1).values > ignore_thresh).view(ignore.shape[1:])
    return ignore
