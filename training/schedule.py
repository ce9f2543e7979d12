"""Pure schedules of the training iteration: learning rate and DropBlock probability."""

from __future__ import annotations

import math


def learning_rate(
    iteration: int,
    total: int,
    base_lr: float,
    warmup: int,
    schedule: str = "cosine",
    final_ratio: float = 0.05,
    steps: tuple[float, ...] = (0.8, 0.9),
    step_scale: float = 0.1,
) -> float:
    """Darknet's burn-in (``lr * (i / burn_in) ** 4``) for ``warmup`` iterations, then cosine
    decay to ``final_ratio * lr`` or step decay by ``step_scale`` at fractions ``steps`` of
    training."""
    if iteration < warmup:
        return base_lr * (iteration / warmup) ** 4
    if schedule == "step":
        return base_lr * step_scale ** sum(iteration >= s * total for s in steps)
    if schedule != "cosine":
        raise ValueError(f"unknown schedule {schedule!r} (cosine or step)")
    progress = min(1.0, (iteration - warmup) / max(1, total - warmup))
    return base_lr * (final_ratio + (1 - final_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def dropblock_probability(iteration: int, total: int, max_probability: float) -> float:
    """Linear ramp from 0 to ``max_probability`` over training (Ghiasi et al. 2018, as YOLOv4 uses it)."""
    return max_probability * min(1.0, iteration / max(1, total))
