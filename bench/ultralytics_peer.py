"""ultralytics (the peer) on our datasets: its label format and a clean environment to run it in.

The peer lives in its own virtual environment (never a project dependency), so the bench scripts
hand it files and read back what it reports.
"""

from __future__ import annotations

import os
from pathlib import Path

from yolo4.core.datasets import DetectionSet


def write_yolo_format(train: DetectionSet, root: Path, val: DetectionSet | None = None) -> Path:
    """``root/{train,val}/images`` (symlinks) + ``labels`` (normalised cx cy w h) and
    ``root/data.yaml``; without ``val`` the train images stand in for it (ultralytics needs one)."""
    for name, split in (("train", train), ("val", val)):
        if split is None:
            continue
        (root / name / "images").mkdir(parents=True)
        (root / name / "labels").mkdir()
        for s in split.samples:
            (root / name / "images" / s.image_path.name).symlink_to(s.image_path.resolve())
            h, w = s.size
            lines = [f"{c} {(b[0] + b[2]) / 2 / w:.6f} {(b[1] + b[3]) / 2 / h:.6f} {(b[2] - b[0]) / w:.6f} "
                     f"{(b[3] - b[1]) / h:.6f}" for b, c in zip(s.boxes, s.labels)]  # fmt: skip
            (root / name / "labels" / f"{s.image_path.stem}.txt").write_text("\n".join(lines) + "\n")
    names = "\n".join(f"  {i}: {n}" for i, n in enumerate(train.class_names))
    val_dir = "val/images" if val is not None else "train/images"
    (root / "data.yaml").write_text(f"path: {root}\ntrain: train/images\nval: {val_dir}\nnames:\n{names}\n")
    return root / "data.yaml"


def peer_env(tmp: Path) -> dict[str, str]:
    """No network, no settings file in the user's home."""
    return {**os.environ, "YOLO_OFFLINE": "1", "YOLO_CONFIG_DIR": str(tmp / "ultralytics-config")}
