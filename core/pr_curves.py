"""Precision-recall curves per class from ``COCOeval``'s accumulated precision, as PNGs.

The curves are pycocotools' own interpolated precision at its 101 recall thresholds, so
the area under each curve is exactly the AP in the summary. Only matplotlib's
object-oriented ``Figure`` is used (Agg canvas, no pyplot state), so this runs headless
and in worker processes.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from yolo4.core.coco import CocoScores

CURVES = ((0.50, "IoU 0.50", "tab:blue"), (0.75, "IoU 0.75", "tab:orange"), (None, "IoU 0.50:0.95 (mean)", "tab:green"))


def pr_curve(scores: CocoScores, class_index: int, iou: float | None) -> np.ndarray:
    """Precision ``(R,)`` at ``scores.recall_thresholds`` for one class (all areas, 100
    detections), at one IoU threshold or averaged over all of them (``iou=None``).
    Entries are -1 when the class has no ground truth."""
    p = scores.precision[:, :, class_index, 0, -1]  # (T, R)
    if iou is None:
        return p.mean(axis=0) if (p > -1).all() else np.full(p.shape[1], -1.0)
    t = int(np.argmin(np.abs(scores.iou_thresholds - iou)))
    return p[t]


def _draw(fig: Figure, recall: np.ndarray, curves: list[tuple[np.ndarray, str, str]], title: str) -> None:
    ax = fig.add_subplot()
    for precision, label, colour in curves:
        ax.plot(recall, precision, label=label, color=colour, linewidth=1.5)
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="recall", ylabel="precision", title=title)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "class"


def plot_pr_curves(scores: CocoScores, out_dir: str | Path) -> list[Path]:
    """Write ``<category id>_<class>.png`` for every class with ground truth, plus ``all_classes.png``
    (the mean over those classes). Returns the files written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    recall = scores.recall_thresholds
    written, per_iou = [], {label: [] for _, label, _ in CURVES}
    for k, row in enumerate(scores.per_class):
        if row.num_gt == 0:
            continue  # COCO leaves classes without ground truth undefined (-1)
        curves = [(pr_curve(scores, k, iou), label, colour) for iou, label, colour in CURVES]
        for precision, label, _ in curves:
            per_iou[label].append(precision)
        fig = Figure(figsize=(5, 4), dpi=100)
        title = f"{row.name} (id {row.category_id}, {row.num_gt} GT): AP {row.ap:.3f}, AP50 {row.ap50:.3f}"
        _draw(fig, recall, curves, title)
        path = out_dir / f"{row.category_id:03d}_{_safe_name(row.name)}.png"
        fig.savefig(path)
        written.append(path)
    if written:
        mean_curves = [(np.mean(per_iou[label], axis=0), label, colour) for _, label, colour in CURVES]
        fig = Figure(figsize=(5, 4), dpi=100)
        m = scores.metrics
        _draw(fig, recall, mean_curves, f"all classes: mAP50-95 {m['mAP50-95']:.3f}, mAP50 {m['mAP50']:.3f}")
        path = out_dir / "all_classes.png"
        fig.savefig(path)
        written.append(path)
    return written
