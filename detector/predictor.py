"""``Predictor``: images in, detections in original-image pixels out, with PyTorch.

It has the interface of the ONNX ``yolo4.serving.runtime.EdgeDetector`` (``config``,
``input_size``, ``detect``, ``detect_batch``), so detection and evaluation run either one.
"""

from __future__ import annotations

from typing import Iterable

import torch
from yolo4.core.config import DETECT, ModelConfig, PreprocessConfig, Thresholds
from yolo4.core.detections import Detections
from yolo4.core.preprocess import as_bgr_image, boxes_to_original, check_contract, preprocess_batch
from yolo4.detector.decode import DecodedModel
from yolo4.detector.loading import load_model, select_device
from yolo4.detector.postprocess import postprocess


class Predictor:
    """Runs a model on paths, BGR numpy arrays or PIL images.

    ``input_size`` may differ from the training size (multiples of 32); ``preprocess``, if
    given, must equal the model's contract: a different resize mode or normalisation would
    silently cost accuracy, so it is refused.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        config: ModelConfig,
        device: str | torch.device | None = None,
        thresholds: Thresholds = DETECT,
        input_size: tuple[int, int] | None = None,
        preprocess: PreprocessConfig | None = None,
    ):
        self.config = config
        self.contract = check_contract(config.preprocess, preprocess)
        self.input_size = tuple(input_size or config.input_size)
        if any(s % 32 for s in self.input_size):
            raise ValueError(f"input size {self.input_size} must be multiples of 32")
        self.device = select_device(device) if not isinstance(device, torch.device) else device
        self.model = DecodedModel(model, config).to(self.device).eval()
        self.thresholds = thresholds

    @classmethod
    def from_files(cls, weights, cfg=None, names=None, **kwargs) -> "Predictor":
        loaded = load_model(weights, cfg, names)
        return cls(loaded.model, loaded.config, **kwargs)

    @torch.inference_mode()
    def detect_batch(self, images: list) -> list[Detections]:
        if not images:
            return []
        bgr = [as_bgr_image(im) for im in images]
        batch, transforms = preprocess_batch(bgr, self.input_size, self.contract)
        predictions = self.model(torch.from_numpy(batch).to(self.device))
        out = []
        for (boxes, scores, class_ids), transform in zip(postprocess(predictions.float(), self.thresholds), transforms):
            class_ids = class_ids.cpu().numpy()
            out.append(
                Detections(
                    boxes=boxes_to_original(boxes.cpu().numpy(), transform),
                    scores=scores.cpu().numpy(),
                    class_ids=class_ids,
                    class_names=[self.config.class_names[i] for i in class_ids],
                    image_size=transform.original_size,
                )
            )
        return out

    def detect(self, image) -> Detections:
        return self.detect_batch([image])[0]

    def __call__(self, images, batch_size: int = 8) -> list[Detections] | Detections:
        """One image -> ``Detections``; a list -> a list, run in batches of ``batch_size``."""
        if not isinstance(images, (list, tuple)):
            return self.detect(images)
        return [d for chunk in _chunks(images, batch_size) for d in self.detect_batch(chunk)]


def _chunks(items: list, size: int) -> Iterable[list]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])
