"""Random Darknet ``.weights`` written with numpy alone (not with our writer), for tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from yolo4.detector.blocks import ConvBNAct


def write_random_weights(model, path: Path, seed: int = 0, header=(0, 2, 5), seen: int = 32_013_312) -> int:
    """Write weights for ``model.darknet_convs()`` with statistics that keep a deep random
    network's activations in a sane range; return the number of float values."""
    rng = np.random.default_rng(seed)
    chunks = []
    for module in model.darknet_convs():
        if isinstance(module, ConvBNAct):
            conv = module.conv
            n = conv.out_channels
            fan_in = conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]
            chunks += [
                rng.normal(0.0, 0.1, n),  # beta
                rng.uniform(0.5, 1.0, n),  # gamma
                rng.normal(0.0, 0.1, n),  # running mean
                rng.uniform(0.5, 1.5, n),  # running variance
                rng.normal(0.0, np.sqrt(1.0 / fan_in), conv.weight.numel()),
            ]
        else:  # prediction conv: small outputs so exp(tw) stays finite and sigmoids unsaturated
            fan_in = module.in_channels
            chunks += [rng.normal(0.0, 1.0, module.out_channels), rng.normal(0.0, 1.5 / np.sqrt(fan_in), module.weight.numel())]
    values = np.concatenate(chunks).astype("<f4")
    wide = header[0] * 10 + header[1] >= 2
    with open(path, "wb") as f:
        f.write(np.array(header, "<i4").tobytes())
        f.write(np.array([seen], "<i8" if wide else "<i4").tobytes())
        f.write(values.tobytes())
    return values.size
