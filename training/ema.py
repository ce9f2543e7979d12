"""Exponential moving average of model weights, with YOLOv5's warm-up of the decay."""

from __future__ import annotations

import copy
import math

import torch
from torch import nn


class ModelEMA:
    """``ema = d * ema + (1 - d) * model`` after each step, with ``d = decay * (1 - exp(-updates / tau))``
    so the average follows the model closely early on. YOLOv5's ``tau = 2000`` suits runs of tens of
    thousands of steps; in a run of a few hundred the average barely averages (d = 0.22 at step 500)."""

    def __init__(self, model: nn.Module, decay: float = 0.9999, updates: int = 0, tau: float = 2000.0):
        self.module = copy.deepcopy(model).eval()
        self.decay = decay
        self.tau = tau
        self.updates = updates
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = self.decay * (1 - math.exp(-self.updates / self.tau))
        model_state = model.state_dict()
        for name, value in self.module.state_dict().items():
            if value.dtype.is_floating_point:
                value.mul_(d).add_(model_state[name].detach(), alpha=1 - d)
            else:
                value.copy_(model_state[name])
