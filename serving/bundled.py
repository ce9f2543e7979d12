"""The model that ships inside the package (``serving/models/``), and its model card.

A fresh install has no weights and nothing can be downloaded, so a small detector trained by
this project on BCCD (blood cells: RBC, WBC, Platelets) comes with it. ``yolo4 serve``,
``yolo4 detect`` and ``python -m serving.edge`` fall back to it when no model is given, and
say so. ``model_card.json`` beside the ONNX files records how it was made and how well it does
(written by ``python -m training.bundle``, which reproduces the files); the card's
``default_file`` names the file used (the INT8 one when it kept FP32's accuracy).

Torch-free: the edge runtime and the service read this.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

MODELS_DIR = Path(__file__).resolve().parent / "models"
CARD_FILE = MODELS_DIR / "model_card.json"
SAMPLES_DIR = Path(__file__).resolve().parent.parent / "data" / "samples"
SAMPLE_IMAGE = SAMPLES_DIR / "bccd_BloodImage_00125.jpg"  # see data/samples/README.md (MIT, BCCD)


@lru_cache(maxsize=1)
def model_card() -> dict[str, Any] | None:
    """The card of the bundled model, or None when the package carries no model."""
    if not CARD_FILE.is_file():
        return None
    return json.loads(CARD_FILE.read_text())


def bundled_model_path() -> Path | None:
    """The bundled model's default ONNX file, or None when the package carries none."""
    card = model_card()
    if card is None:
        return None
    path = MODELS_DIR / card["default_file"]
    return path if path.is_file() else None


def is_bundled(path: str | Path) -> bool:
    default = bundled_model_path()
    if default is None:
        return False
    path = Path(path).resolve()
    return path.parent == MODELS_DIR.resolve() and path.name in {f["file"] for f in model_card()["files"]}


def bundled_note() -> str:
    """One line for command output: which model runs when the user gave none."""
    card = model_card()
    path = bundled_model_path()
    return (
        f"no model given: using the bundled {card['name']} ({path.name}; {card['task']}, classes "
        f"{', '.join(card['classes'])}); see `yolo4 info` for its model card"
    )


def describe_card(card: dict[str, Any]) -> str:
    """The model card as text for ``yolo4 info``."""
    lines = [f"{card['name']}: {card['summary']}", ""]
    data = card["data"]
    lines.append(f"data        {data['name']} ({data['licence']}, {data['source']})")
    lines.append(f"            trained on {data['trained_on']}; metrics on {data['evaluated_on']}")
    lines.append(f"classes     {', '.join(card['classes'])}")
    lines.append(f"licence     {card['licence']}")
    model = card["model"]
    lines.append(
        f"model       {model['variant']}, {model['parameters']:,} parameters, {model['activation']}, "
        f"input {model['input_size']}"
    )
    training = card["training"]
    lines.append(f"training    {training['epochs']} epochs, {training['wall_seconds']:,.0f} s on {training['machine']}")
    lines.append(f"recipe      {training['recipe']}")
    lines.append(f"reproduce   {training['command']}")
    lines.append("")
    lines.append(f"{'file':<34} {'precision':<9} {'MB':>6} {'mAP50':>6} {'mAP50-95':>8} {'latency ms':>10}")
    for f in card["files"]:
        marker = " (default)" if f["file"] == card["default_file"] else ""
        lines.append(
            f"{f['file']:<34} {f['precision']:<9} {f['megabytes']:>6.2f} {f['map50']:>6.3f} {f['map50_95']:>8.3f} "
            f"{f['latency_ms']:>10.1f}{marker}"
        )
    lines.append(f"            ({card['metrics_note']})")
    if card.get("held_out"):
        held = card["held_out"]
        lines.append(
            f"held-out    {held['description']}: mAP50 {held['map50']:.3f}, mAP50-95 {held['map50_95']:.3f}"
        )
    if card.get("peer"):
        peer = card["peer"]
        lines.append(f"peer        {peer['description']}")
        if peer.get("same_split"):
            lines.append(f"            {peer['same_split']}")
    for note in card.get("limitations", []):
        lines.append(f"limitation  {note}")
    return "\n".join(lines)
