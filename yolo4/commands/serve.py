"""``yolo4 serve``: the HTTP service (``yolo4.serving.launch``). No torch."""

from __future__ import annotations

import argparse


def run(args: argparse.Namespace) -> int:
    from yolo4.serving.launch import run as launch

    launch(args.onnx, args.host, args.port, args.threads, args.workers, args.model, args.precision)  # replaces this process
    return 0
