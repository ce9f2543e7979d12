"""The torch-free core that both sides build on: numpy, OpenCV, PIL, pycocotools; never torch,
onnxruntime, ``yolo4.detector``, ``yolo4.training`` or ``yolo4.serving`` (tests/test_boundaries.py)."""
