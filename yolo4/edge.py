"""The edge entry point: ``yolo4 detect`` on an ONNX file, with the model as first argument. No torch.

    python -m yolo4.edge model.onnx IMAGES_OR_DIR_OR_VIDEO... --out DIR [--conf 0.25] [--threads 2]
    python -m yolo4.edge IMAGES_OR_DIR_OR_VIDEO...      (the default shipped model)

Per image ``DIR/NAME.json`` + ``DIR/NAME.jpg``; per video ``DIR/NAME.json`` + ``DIR/NAME.mp4``.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from yolo4.cli import main as yolo4

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0].lower().endswith(".onnx"):
        argv = [*argv[1:], "--onnx", argv[0]]
    if "--out" not in argv:
        argv += ["--out", "runs/edge"]
    return yolo4(["detect", *argv])


if __name__ == "__main__":
    sys.exit(main())
