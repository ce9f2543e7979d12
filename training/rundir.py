"""A training run's folder: the config used, a CSV of metrics per epoch, loss/mAP plots."""

from __future__ import annotations

import csv
import time
from pathlib import Path

import yaml

PLOT_EVERY_S = 30.0


class RunDir:
    """``enabled=False`` (ranks other than 0) makes every method a no-op."""

    def __init__(self, path: str | Path, enabled: bool = True, resumed: bool = False):
        path = Path(path)
        if enabled and not resumed and path.exists() and any(path.iterdir()):
            path = _next_free(path)  # never overwrite an earlier run
        self.path, self.enabled = path, enabled
        self.weights = path / "weights"
        self.metrics_file = path / "metrics.csv"
        self._plotted = -float("inf")
        if enabled:
            self.weights.mkdir(parents=True, exist_ok=True)

    def write_config(self, train_config, model_config, loss_config) -> None:
        if self.enabled:
            text = yaml.safe_dump({"train": _plain(train_config.to_dict()), "model": _plain(model_config.to_dict()),
                                   "loss": _plain(loss_config.to_dict())}, sort_keys=False)  # fmt: skip
            (self.path / "config.yaml").write_text(text)

    def log(self, row: dict, final: bool = False) -> None:
        """Append one epoch's metrics; redraw the plots at most every ``PLOT_EVERY_S`` (drawing
        took longer than a short epoch) and at the last epoch."""
        if not self.enabled:
            return
        rows = self.read_metrics()
        rows = [r for r in rows if int(float(r["epoch"])) < int(row["epoch"])] + [{k: str(v) for k, v in row.items()}]
        columns = list(dict.fromkeys(k for r in rows for k in r))
        with open(self.metrics_file, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)
        if final or time.monotonic() - self._plotted >= PLOT_EVERY_S:
            self.plot(rows)
            self._plotted = time.monotonic()

    def read_metrics(self) -> list[dict]:
        if not self.metrics_file.exists():
            return []
        with open(self.metrics_file, newline="") as f:
            return list(csv.DictReader(f))

    def plot(self, rows: list[dict]) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        epochs = [int(float(r["epoch"])) for r in rows]
        fig, (loss_ax, map_ax) = plt.subplots(1, 2, figsize=(11, 4))
        for key in ("loss_total", "loss_box", "loss_obj", "loss_cls"):
            values = [float(r[key]) for r in rows if r.get(key)]
            if len(values) == len(epochs):
                loss_ax.plot(epochs, values, label=key[5:], marker="." if len(epochs) < 30 else None)
        loss_ax.set(title="training loss (per image)", xlabel="epoch", yscale="log")
        loss_ax.legend()
        for key in ("mAP50", "mAP50-95"):
            points = [(e, float(r[key])) for e, r in zip(epochs, rows) if r.get(key)]
            if points:
                map_ax.plot(*zip(*points), label=key, marker=".")
        map_ax.set(title="validation mAP (EMA weights)", xlabel="epoch", ylim=(0, 1))
        map_ax.grid(alpha=0.3)
        if map_ax.lines:
            map_ax.legend()
        fig.tight_layout()
        fig.savefig(self.path / "curves.png", dpi=100)
        plt.close(fig)


def _next_free(path: Path) -> Path:
    n = 2
    while (path.parent / f"{path.name}{n}").exists():
        n += 1
    return path.parent / f"{path.name}{n}"


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
