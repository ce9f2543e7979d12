"""The PyTorch side of the model: modules, decode, Darknet ``.cfg``/``.weights``, checkpoints,
the predictor and ONNX export. Imports ``yolo4.core``; never ``yolo4.training`` or ``yolo4.serving``."""
