"""Darknet's target assignment for YOLOv4 (darknet/src/yolo_layer.c), as pure functions.

A ground-truth box is a positive for:
  * the anchor (over all heads) whose shape best matches it (every copy of it, when heads share
    an anchor, as yolov4-tiny's do), and
  * every other anchor whose shape IoU with it exceeds ``iou_thresh`` (0.213 in yolov4.cfg;
    1.0 disables this and leaves one anchor per box),
each at the grid cell containing the box centre on that anchor's head. With
``neighbor_cells`` (Scaled-YOLOv4) the two cells nearest to the centre, one across each axis,
are positives too: three times the positives, which a short training run needs. If two boxes
claim the same (image, anchor, cell), a centre cell beats a neighbour, then the box whose
shape fits the anchor better keeps it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class HeadTargets:
    """Positives of one head; all tensors have length P."""

    image: torch.Tensor  # (P,) int64 image index in the batch
    anchor: torch.Tensor  # (P,) int64 anchor index within the head
    grid_y: torch.Tensor  # (P,) int64
    grid_x: torch.Tensor  # (P,) int64
    boxes: torch.Tensor  # (P, 4) float, xyxy in input pixels
    classes: torch.Tensor  # (P,) int64


def anchor_shape_iou(wh: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """IoU of boxes and anchors aligned at a common centre.

    Args:
        wh: ``(M, 2)`` box widths and heights.
        anchors: ``(K, 2)`` anchor widths and heights.

    Returns:
        ``(M, K)`` IoU.
    """
    inter = torch.min(wh[:, None, 0], anchors[None, :, 0]) * torch.min(wh[:, None, 1], anchors[None, :, 1])
    union = wh[:, None].prod(-1) + anchors[None].prod(-1) - inter
    return inter / union.clamp(min=1e-9)


def assign_targets(
    targets: torch.Tensor,
    anchors: list[torch.Tensor],
    strides: list[int],
    grid_sizes: list[tuple[int, int]],
    iou_thresh: float,
    neighbor_cells: bool = False,
) -> list[HeadTargets]:
    """Assign ground-truth boxes to (image, anchor, cell) slots of every head.

    Args:
        targets: ``(M, 6)`` rows ``[image index, class, x1, y1, x2, y2]`` in input pixels.
        anchors: per head, ``(A, 2)`` anchor (w, h) in input pixels.
        strides: per head, input pixels per cell.
        grid_sizes: per head, ``(H, W)`` of its map.
        iou_thresh: extra positives for anchors whose shape IoU exceeds this.
        neighbor_cells: also assign the nearest neighbouring cell across x and across y.

    Returns:
        One ``HeadTargets`` per head.
    """
    all_anchors = torch.cat(anchors)  # (K, 2) over every head
    xyxy = targets[:, 2:6]
    wh = (xyxy[:, 2:] - xyxy[:, :2]).clamp(min=1e-6)
    centre = (xyxy[:, :2] + xyxy[:, 2:]) / 2
    shape_iou = anchor_shape_iou(wh, all_anchors)  # (M, K)
    # Every anchor at the best shape IoU: yolov4-tiny's two heads share an anchor (81,82), and
    # Darknet makes a box whose best match it is a positive on both heads.
    best = shape_iou >= shape_iou.max(dim=1, keepdim=True).values  # (M, K)

    results, first = [], 0
    for head_anchors, stride, (height, width) in zip(anchors, strides, grid_sizes):
        A = len(head_anchors)
        global_index = torch.arange(first, first + A, device=targets.device)
        first += A
        iou = shape_iou[:, global_index]  # (M, A)
        positive = best[:, global_index] | (iou > iou_thresh)
        gt, anchor = positive.nonzero(as_tuple=True)
        cell = centre[gt] / stride  # (P, 2) x, y in cells
        grid_x = cell[:, 0].long().clamp(0, width - 1)
        grid_y = cell[:, 1].long().clamp(0, height - 1)
        score = iou[gt, anchor] + 1.0  # centre cells outrank neighbours
        if neighbor_cells:
            gt, anchor, grid_x, grid_y, score = _add_neighbors(gt, anchor, grid_x, grid_y, score, cell, width, height)
        image = targets[gt, 0].long()
        keep = _best_per_slot(image, anchor, grid_y, grid_x, score, A, height, width)
        gt = gt[keep]
        results.append(
            HeadTargets(image[keep], anchor[keep], grid_y[keep], grid_x[keep], xyxy[gt], targets[gt, 1].long())
        )
    return results


def _add_neighbors(gt, anchor, grid_x, grid_y, score, cell, width: int, height: int):
    """Append, for each positive, the neighbouring cell on the side of x (and of y) its centre
    lies nearer to, where that cell is on the map."""
    frac = cell - cell.floor()  # (P, 2)
    step = torch.where(frac < 0.5, -1, 1)  # (P, 2) towards the nearer neighbour
    nx, ny = grid_x + step[:, 0], grid_y + step[:, 1]
    on_x = (nx >= 0) & (nx < width)
    on_y = (ny >= 0) & (ny < height)
    neighbour_score = score - 1.0
    return (
        torch.cat([gt, gt[on_x], gt[on_y]]),
        torch.cat([anchor, anchor[on_x], anchor[on_y]]),
        torch.cat([grid_x, nx[on_x], grid_x[on_y]]),
        torch.cat([grid_y, grid_y[on_x], ny[on_y]]),
        torch.cat([score, neighbour_score[on_x], neighbour_score[on_y]]),
    )


def _best_per_slot(image, anchor, grid_y, grid_x, score, A: int, H: int, W: int) -> torch.Tensor:
    """Indices that keep, for each distinct (image, anchor, cell), the entry of highest score
    (the earliest on ties)."""
    if len(score) == 0:
        return torch.zeros(0, dtype=torch.long, device=score.device)
    slot = ((image * A + anchor) * H + grid_y) * W + grid_x
    order = torch.argsort(score, descending=True, stable=True)
    _, inverse = torch.unique(slot[order], return_inverse=True)
    position = torch.arange(len(order), device=score.device)
    first = torch.full((int(inverse.max()) + 1,), len(order), device=score.device, dtype=torch.long)
    first = first.scatter_reduce(0, inverse, position, reduce="amin")
    return order[first].sort().values
