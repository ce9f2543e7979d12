"""Training dataset, batch collation and a resumable, distributed-aware batch order."""

from __future__ import annotations

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from yolo4.core.config import PreprocessConfig
from yolo4.core.datasets import Sample
from yolo4.core.preprocess import to_input_tensor
from yolo4.training.augment import AugmentConfig, Augmenter, Example


class TrainDataset(Dataset):
    """Augmented training examples; item ``i`` of epoch ``e`` depends only on (seed, e, i)."""

    def __init__(self, samples: list[Sample], input_size, contract: PreprocessConfig, augment: AugmentConfig,
                 seed: int = 0, cache: bool = False):  # fmt: skip
        self.samples = samples
        self.seed = seed
        self.epoch = 0
        self.input_size = tuple(input_size)
        self.contract = contract
        # Decoded images kept in memory (per process): a Mosaic reads four, and JPEG decoding
        # was a third of the data time.
        self._cache: dict[int, np.ndarray] | None = {} if cache else None
        self.set_augment(augment)

    def set_augment(self, augment: AugmentConfig) -> None:
        self.augment = augment
        self.augmenter = Augmenter(self.load, len(self.samples), self.input_size, self.contract, augment)

    def load(self, index: int) -> Example:
        sample = self.samples[index]
        image = None if self._cache is None else self._cache.get(index)
        if image is None:
            image = cv2.imread(str(sample.image_path), cv2.IMREAD_COLOR)
            if image is None:  # validated before training; a file changed underneath us
                raise RuntimeError(f"{sample.image_path}: cannot read image")
            if self._cache is not None:
                image.flags.writeable = False  # shared by every later epoch: augmentations must copy
                self._cache[index] = image
        return image, sample.boxes.copy(), sample.labels.copy()

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Example:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        return self.augmenter(index, rng)


def collate(batch: list[Example], contract: PreprocessConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """-> images ``(B, 3, H, W)`` float32 per the contract, in channels_last memory (the trainer's
    layout: no transposing copy here and none there), targets ``(M, 6)``
    ``[image index, class, x1, y1, x2, y2]`` in input pixels."""
    images = torch.from_numpy(to_input_tensor([image for image, _, _ in batch], contract, contiguous=False))
    rows = [
        np.concatenate([np.full((len(labels), 1), i), labels[:, None], boxes], axis=1)
        for i, (_, boxes, labels) in enumerate(batch)
    ]
    targets = torch.from_numpy(np.concatenate(rows).astype(np.float32)) if rows else torch.zeros(0, 6)
    return images, targets.reshape(-1, 6)


class Collate:
    """Picklable collate function (DataLoader workers need one)."""

    def __init__(self, contract: PreprocessConfig):
        self.contract = contract

    def __call__(self, batch):
        return collate(batch, self.contract)


def epoch_batches(dataset_size: int, batch_size: int, epoch: int, seed: int, rank: int, world: int,
                  skip: int = 0) -> list[list[int]]:  # fmt: skip
    """This rank's batches of one epoch, in order, without the first ``skip`` (for resume).

    The order is ``DistributedSampler``'s (shuffled by seed + epoch, padded to divide evenly,
    strided over ranks), so one process and N processes see the same data per step.
    """
    sampler = DistributedSampler(range(dataset_size), num_replicas=world, rank=rank, shuffle=True, seed=seed, drop_last=False)
    sampler.set_epoch(epoch)
    indices = list(sampler)
    batches = [indices[i : i + batch_size] for i in range(0, len(indices), batch_size)]
    if len(batches) > 1 and len(batches[-1]) < batch_size:
        batches = batches[:-1]  # a tiny last batch only adds noise to BatchNorm statistics
    return batches[skip:]


CACHE_BYTES = 2 * 2**30  # decoded training images kept in memory up to this much


def decoded_bytes(samples: list[Sample]) -> int:
    return sum(h * w * 3 for h, w in (s.size for s in samples))


def auto_workers(device: torch.device) -> int:
    """Loader processes: none on a CPU, where they take cores from the model's own threads (on 2
    cores, 2 workers made an epoch 12 % slower than loading in the main process); a core each up
    to 8 beside a GPU."""
    import os

    if device.type != "cuda":
        return 0
    return max(1, min(8, len(os.sched_getaffinity(0)) - 1))


def make_loader(dataset: TrainDataset, batches: list[list[int]], workers: int) -> DataLoader:
    # Worker seeds come from a generator of (seed, epoch), not the global RNG, so creating a
    # loader mid-epoch on resume leaves the model's RNG stream (DropBlock) as it was.
    generator = torch.Generator().manual_seed(dataset.seed * 1000 + dataset.epoch)
    return DataLoader(
        dataset, batch_sampler=batches, num_workers=workers, collate_fn=Collate(dataset.contract),
        pin_memory=torch.cuda.is_available(), generator=generator,
    )  # fmt: skip

