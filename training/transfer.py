"""Transfer learning: what a model with other classes (and anchors fitted to its data) keeps of a
trained one. Pure tensor functions plus one that applies them to two ``Yolo4`` models.

Everything whose shape is unchanged carries over: backbone, neck, the heads' 3x3 convolutions.
Of each prediction convolution (rows ``a * (5 + C) + j``, anchor-major), the box and objectness
rows of every anchor carry over too; only the class rows start fresh. When the anchors are
re-fitted, each new anchor takes the rows of the most similar old anchor of its head, and its
``tw, th`` biases move by ``log(old / new)``: ``exp(t + log(old / new)) * new == exp(t) * old``, so
the head predicts the same boxes it did before the anchors changed. When the grid sensitivity
changes (``scale_x_y``, offset ``s * sigmoid(t) - (s - 1) / 2``), the ``tx, ty`` rows are scaled by
``s_old / s_new``, which keeps the offsets at and near the cell centre (first order in ``t``).
"""

from __future__ import annotations

import torch
from yolo4.training.assign import anchor_shape_iou

BOX_AND_OBJECTNESS = 5  # tx, ty, tw, th, objectness: the rows that do not depend on the classes


def nearest_anchor(new_anchors: torch.Tensor, old_anchors: torch.Tensor) -> torch.Tensor:
    """``(A_new,)`` index of the old anchor with the highest shape IoU for each new one.

    Args: new_anchors ``(A_new, 2)``, old_anchors ``(A_old, 2)``, (w, h) in input pixels.
    """
    return anchor_shape_iou(new_anchors, old_anchors).argmax(dim=1)


def carry_prediction_rows(
    old_weight: torch.Tensor,  # (A_old * (5 + C_old), C_in, 1, 1)
    old_bias: torch.Tensor,  # (A_old * (5 + C_old),)
    old_anchors: torch.Tensor,  # (A_old, 2)
    new_weight: torch.Tensor,  # (A_new * (5 + C_new), C_in, 1, 1): fresh, its class rows are kept
    new_bias: torch.Tensor,  # (A_new * (5 + C_new),)
    new_anchors: torch.Tensor,  # (A_new, 2)
) -> tuple[torch.Tensor, torch.Tensor]:
    """The new prediction convolution's weight and bias: box and objectness rows from the old
    one (see the module), class rows as given. Inputs are not modified."""
    old_w, old_b = old_weight.unflatten(0, (len(old_anchors), -1)), old_bias.unflatten(0, (len(old_anchors), -1))
    weight, bias = new_weight.clone().unflatten(0, (len(new_anchors), -1)), new_bias.clone().unflatten(0, (len(new_anchors), -1))
    source = nearest_anchor(new_anchors, old_anchors)  # (A_new,)
    weight[:, :BOX_AND_OBJECTNESS] = old_w[source, :BOX_AND_OBJECTNESS]
    bias[:, :BOX_AND_OBJECTNESS] = old_b[source, :BOX_AND_OBJECTNESS]
    bias[:, 2:4] += torch.log(old_anchors[source] / new_anchors)  # (A_new, 2)
    return weight.flatten(0, 1), bias.flatten(0, 1)


@torch.no_grad()
def transfer(source: torch.nn.Module, target: torch.nn.Module) -> tuple[int, int]:
    """Load into ``target`` (a ``Yolo4``, new classes/anchors) what it keeps of ``source`` (a
    trained ``Yolo4`` of the same architecture). Returns (tensors copied whole, tensors of
    ``target``); the prediction convolutions count as not copied whole."""
    own = target.state_dict()
    kept = {k: v for k, v in source.state_dict().items() if k in own and own[k].shape == v.shape}
    target.load_state_dict(kept, strict=False)
    for i, (old, new) in enumerate(zip(source.heads, target.heads)):
        if f"heads.{i}.pred.weight" in kept:
            continue  # same classes and anchor count: the rows came over whole
        old_anchors = torch.tensor(source.config.heads[i].anchors, dtype=torch.float32)
        new_anchors = torch.tensor(target.config.heads[i].anchors, dtype=torch.float32)
        weight, bias = carry_prediction_rows(old.pred.weight, old.pred.bias, old_anchors,
                                             new.pred.weight, new.pred.bias, new_anchors)  # fmt: skip
        new.pred.weight.copy_(weight)
        new.pred.bias.copy_(bias)
    for old_head, new_head, pred in zip(source.config.heads, target.config.heads, (h.pred for h in target.heads)):
        if old_head.scale_x_y != new_head.scale_x_y:
            weight, bias = rescale_offset_rows(pred.weight, pred.bias, len(new_head.anchors), old_head.scale_x_y / new_head.scale_x_y)
            pred.weight.copy_(weight)
            pred.bias.copy_(bias)
    return len(kept), len(own)


def rescale_offset_rows(
    weight: torch.Tensor,  # (A * (5 + C), C_in, 1, 1)
    bias: torch.Tensor,  # (A * (5 + C),)
    num_anchors: int,
    factor: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The prediction convolution with each anchor's ``tx, ty`` rows multiplied by ``factor``."""
    weight, bias = weight.clone().unflatten(0, (num_anchors, -1)), bias.clone().unflatten(0, (num_anchors, -1))
    weight[:, :2] *= factor
    bias[:, :2] *= factor
    return weight.flatten(0, 1), bias.flatten(0, 1)
