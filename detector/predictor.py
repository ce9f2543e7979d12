"""``Predictor``: images in, detections in original-image pixels out."""

from __future__ import annotations

from typing import Iterable

import torch

from .config import ModelConfig, PreprocessConfig
from .decode import DecodedModel
from .detections import Detections
from .loading import load_model, select_device
from .postprocess import postprocess
from .preprocess import as_bgr_image, boxes_to_original, check_contract, expand_image_paths, preprocess_batch  # noqa: F401 (re-exported)


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
        conf_threshold: float = 0.25,
        iou_threshold: float = 0.45,
        max_detections: int = 300,
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
        self.conf_threshold = conf_threshold
        self.iou_threshold = iou_threshold
        self.max_detections = max_detections

    @classmethod
    def from_files(cls, weights, cfg=None, names=None, **kwargs) -> "Predictor":
        loaded = load_model(weights, cfg, names)
        return cls(loaded.model, loaded.config, **kwargs)

    @torch.inference_mode()
    def predict_batch(self, images: list) -> list[Detections]:
        bgr = [as_bgr_image(im) for im in images]
        batch, transforms = preprocess_batch(bgr, self.input_size, self.contract)
        predictions = self.model(torch.from_numpy(batch).to(self.device))
        results = postprocess(predictions.float(), self.conf_threshold, self.iou_threshold, self.max_detections)
        out = []
        for (boxes, scores, class_ids), transform in zip(results, transforms):
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

    def __call__(self, images, batch_size: int = 8) -> list[Detections] | Detections:
        """One image -> ``Detections``; a list -> a list, run in batches of ``batch_size``."""
        if not isinstance(images, (list, tuple)):
            return self.predict_batch([images])[0]
        return [d for chunk in _chunks(images, batch_size) for d in self.predict_batch(chunk)]


def _chunks(items: list, size: int) -> Iterable[list]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])
