"""yolo4: YOLOv4 object detection, from Darknet files to production.

One import name over the repository's folders (``pyproject.toml`` maps them)::

    yolo4.core       torch-free: configs, pre-processing, Detections, NMS, datasets, COCO scoring
    yolo4.detector   the PyTorch model: modules, decode, Darknet files, checkpoints, ONNX export
    yolo4.training   losses, assignment, augmentation, the trainer
    yolo4.serving    torch-free ONNX side: edge runtime, INT8 quantization, the BentoML service
    yolo4.cli        the ``yolo4`` command
"""

__version__ = "0.2.0"
