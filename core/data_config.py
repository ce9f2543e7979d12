"""Dataset YAMLs (``data/*.yaml``) -> a typed ``DataConfig``.

A dataset YAML names the annotation format, the root folder, the splits and the classes::

    name: bccd
    format: voc                      # voc | coco | yolo
    root: "{shared}/datasets/bccd"   # {shared}: $YOLO4_SHARED, else ../shared
    names: [RBC, WBC, Platelets]     # optional for coco (read from the JSON)
    splits:
      train: {list: ImageSets/Main/train.txt}                                   # voc
      val:   {images: val2017, annotations: annotations/instances_val2017.json}  # coco
      test:  {images: images/test}                   # yolo: labels/ mirrors images/
    difficult: ignore                # voc: <difficult> objects ignored (VOC's protocol), or keep

Relative paths are resolved against ``root``; a relative ``root`` against the YAML's folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

FORMATS = ("voc", "coco", "yolo")
REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = REPO_ROOT / "data"


class DataConfigError(ValueError):
    pass


@dataclass(frozen=True)
class SplitConfig:
    images: Path | None = None  # image folder (coco, yolo; voc: JPEGImages)
    annotations: Path | None = None  # coco JSON; voc Annotations folder
    list: Path | None = None  # voc ImageSets file, or a yolo txt of image paths


@dataclass(frozen=True)
class DataConfig:
    name: str
    format: str
    root: Path
    splits: dict[str, SplitConfig] = field(default_factory=dict)
    class_names: tuple[str, ...] = ()  # empty for coco until the JSON is read
    path: Path | None = None
    # VOC objects marked <difficult>1: "ignore" (VOC's protocol: not trained on, and neither a
    # hit nor a miss in scoring, as COCO's iscrowd regions) or "keep" (ordinary objects).
    difficult: str = "ignore"

    def split(self, name: str) -> SplitConfig:
        if name not in self.splits:
            raise DataConfigError(f"{self.path}: no split {name!r} (has {', '.join(self.splits)})")
        return self.splits[name]


def shared_root() -> Path:
    """The shared data folder: ``$YOLO4_SHARED``, else ``../shared`` from the working
    directory, else beside the repository."""
    if os.environ.get("YOLO4_SHARED"):
        return Path(os.environ["YOLO4_SHARED"])
    for candidate in (Path.cwd().parent / "shared", REPO_ROOT.parent / "shared"):
        if candidate.is_dir():
            return candidate
    return REPO_ROOT.parent / "shared"


def resolve_data_path(path: str | Path) -> Path:
    """``bccd`` or ``bccd.yaml`` names a shipped YAML in ``data/``; anything else is a path."""
    path = Path(path)
    if path.exists():
        return path
    for candidate in (DATA_DIR / path, DATA_DIR / f"{path}.yaml"):
        if candidate.exists():
            return candidate
    raise DataConfigError(f"{path}: no such dataset YAML (shipped: {', '.join(p.stem for p in DATA_DIR.glob('*.yaml'))})")


def load_data_config(path: str | Path) -> DataConfig:
    path = resolve_data_path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise DataConfigError(f"{path}: invalid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise DataConfigError(f"{path}: expected a mapping with format, root, splits")
    unknown = set(raw) - {"name", "format", "root", "names", "splits", "difficult"}
    if unknown:
        raise DataConfigError(f"{path}: unknown keys {sorted(unknown)}")
    fmt = raw.get("format")
    if fmt not in FORMATS:
        raise DataConfigError(f"{path}: format must be one of {FORMATS}, got {fmt!r}")
    root = Path(str(raw.get("root", ".")).replace("{shared}", str(shared_root())))
    if not root.is_absolute():
        root = (path.parent / root).resolve()
    splits = {}
    for name, spec in (raw.get("splits") or {}).items():
        if isinstance(spec, str):  # shorthand: voc list file, yolo image folder, coco JSON
            spec = {"voc": {"list": spec}, "yolo": {"images": spec}, "coco": {"annotations": spec}}[fmt]
        if not isinstance(spec, dict) or set(spec) - {"images", "annotations", "list"}:
            raise DataConfigError(f"{path}: split {name!r} takes images / annotations / list")
        splits[name] = SplitConfig(**{k: root / v for k, v in spec.items()})
    if not splits:
        raise DataConfigError(f"{path}: no splits")
    names = tuple(str(n) for n in raw.get("names") or ())
    if fmt != "coco" and not names:
        raise DataConfigError(f"{path}: names (the class list) is required for {fmt} datasets")
    difficult = raw.get("difficult", "ignore")
    if difficult not in ("ignore", "keep"):
        raise DataConfigError(f"{path}: difficult must be ignore or keep, got {difficult!r}")
    return DataConfig(str(raw.get("name", path.stem)), fmt, root, splits, names, path, difficult)
