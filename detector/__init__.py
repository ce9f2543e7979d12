"""YOLOv4 model family: config, modules, decode, Darknet I/O and inference.

Importing this package is cheap and torch-free; each submodule imports what it needs
(``detector.preprocess`` and ``detector.draw`` never import torch, so the edge runtime
can share them).
"""
