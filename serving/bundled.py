"""The models that ship inside the package (``serving/models/``), by name, with their cards.

Each shipped model is a card ``models/NAME.json`` (what it is, where it came from, its licence,
its figures and the CPU they were measured on) and the ONNX files the card lists (FP32 and/or
INT8). ``yolo4 serve``, ``yolo4 detect``, ``python -m yolo4.edge`` and ``EdgeDetector()``
run the default model when none is given, and say so; ``--model NAME`` picks another. Torch-free.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

MODELS_DIR = Path(__file__).resolve().parent / "models"
SAMPLES_DIR = Path(__file__).resolve().parent.parent / "data" / "samples"
DEFAULT_MODEL = "yolov4-tiny-coco"  # the official COCO yolov4-tiny; while not shipped, the first model


class ModelNotFound(ValueError):
    pass


@lru_cache(maxsize=1)
def shipped_models() -> dict[str, dict[str, Any]]:
    """name -> card of every model in ``serving/models/`` (empty in an installation without them)."""
    cards = {}
    for path in sorted(MODELS_DIR.glob("*.json")):
        card = json.loads(path.read_text())
        if isinstance(card, dict) and "files" in card and all((MODELS_DIR / f["file"]).is_file() for f in card["files"]):
            cards[card["name"]] = card
    return cards


def default_model_name() -> str | None:
    models = shipped_models()
    if DEFAULT_MODEL in models:
        return DEFAULT_MODEL
    return next(iter(models), None)


def card(name: str | None = None) -> dict[str, Any]:
    """The card of a shipped model (default: the default model)."""
    name = name or default_model_name()
    models = shipped_models()
    if name not in models:
        known = ", ".join(models) or "none in this installation"
        raise ModelNotFound(f"no shipped model named {name!r} (shipped: {known})")
    return models[name]


def model_files(name: str | None = None) -> dict[str, Path]:
    """precision ('fp32', 'int8') -> file of a shipped model."""
    return {f["precision"]: MODELS_DIR / f["file"] for f in card(name)["files"]}


def default_model_file(name: str | None = None) -> Path:
    """The file that runs for a shipped model when the precision is not chosen: the card's
    ``default_file``."""
    entry = card(name)
    return MODELS_DIR / entry["default_file"]


def describe_default(name: str | None = None) -> str:
    """One line for command output: which model runs when the user gave none."""
    entry = card(name)
    return (
        f"no model given: using the shipped {entry['name']} ({entry['default_file']}; {entry['task']}, "
        f"{len(entry['classes'])} classes); `yolo4 info` lists the shipped models"
    )


def shipped_name(path: str | Path) -> str | None:
    """The shipped model a file belongs to, or None."""
    path = Path(path).resolve()
    if path.parent != MODELS_DIR.resolve():
        return None
    return next((name for name, c in shipped_models().items() if path.name in {f["file"] for f in c["files"]}), None)


def sample_image(name: str | None = None) -> Path:
    """The sample image that ships with a model (``data/samples/``, licence beside it)."""
    return SAMPLES_DIR / card(name)["sample_image"]


def any_sample_image() -> Path:
    """A real photo to time a model on (latency does not depend on the content much)."""
    return sorted(SAMPLES_DIR.glob("*.jpg"))[0]


def describe_card(entry: dict[str, Any]) -> str:
    """A model card as text for ``yolo4 info``."""
    lines = [f"{entry['name']}: {entry['summary']}", ""]
    data = entry["data"]
    lines.append(f"data        {data['name']} ({data['licence']}, {data['source']})")
    lines.append(f"            trained on {data['trained_on']}; metrics on {data['evaluated_on']}")
    lines.append(f"classes     {len(entry['classes'])}: {', '.join(entry['classes'][:12])}{' ...' if len(entry['classes']) > 12 else ''}")
    lines.append(f"licence     {entry['licence']}")
    model = entry["model"]
    lines.append(
        f"model       {model['variant']}, {model['parameters']:,} parameters, {model['activation']}, "
        f"input {model['input_size']}"
    )
    training = entry.get("training")
    if training:
        lines.append(f"training    {training['summary']}")
        lines.append(f"reproduce   {training['command']}")
    lines.append("")
    lines.append(f"{'file':<34} {'precision':<9} {'MB':>6} {'mAP50':>6} {'mAP50-95':>8}")
    for f in entry["files"]:
        marker = " (default)" if f["file"] == entry["default_file"] else ""
        lines.append(f"{f['file']:<34} {f['precision']:<9} {f['megabytes']:>6.2f} {f['map50']:>6.3f} {f['map50_95']:>8.3f}{marker}")
    lines.append(f"            ({entry['metrics_note']})")
    for key in ("held_out", "peer"):
        if entry.get(key):
            described = entry[key].get("description") or entry[key].get("name") or entry[key].get("source", "")
            lines.append(f"{key.replace('_', '-'):<11} {described}")
    for note in entry.get("limitations", []):
        lines.append(f"limitation  {note}")
    return "\n".join(lines)
