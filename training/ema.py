"""Exponential moving average of model weights, with YOLOv5's warm-up of the decay."""

from __future__ import annotations

import copy
import math

import torch
from torch import nn


class ModelEMA:
    """``ema = d * ema + (1 - d) * model`` after each step, with ``d = decay * (1 - exp(-updates / 2000))``
    so the average follows the model closely early on (short CPU runs benefit the most)."""

    def __init__(self, model: nn.Module, decay: float = 0.9999, updates: int = 0):
        self.module = copy.deepcopy(model).eval()
        self.decay = decay
        self.updates = updates
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = self.decay * (1 - math.exp(-self.updates / 2000))
        model_state = model.state_dict()
        for name, value in self.module.state_dict().items():
            if value.dtype.is_floating_point:
                value.mul_(d).add_(model_state[name].detach(), alpha=1 - d)
            else:
                value.copy_(model_state[name])
