import math

import torch
from yolo4.detector.decode import decode_head


def test_decode_matches_darknet_formula_by_hand():
    # One anchor (w=20, h=40), a 2x3 grid (H=2, W=3), stride 8, scale_x_y 1.2, one class.
    raw = torch.zeros(1, 1, 2, 3, 6)
    raw[0, 0, 1, 2] = torch.tensor([0.0, 2.0, math.log(2.0), 0.0, 3.0, -1.0])  # cell x=2, y=1
    out = decode_head(raw, torch.tensor([[20.0, 40.0]]), stride=8, scale_x_y=1.2)
    assert out.shape == (1, 6, 6)
    row = out[0, 1 * 3 + 2]  # anchor-major, then row, then column
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    expected = [
        (0.5 * 1.2 - 0.1 + 2) * 8,
        (sig(2.0) * 1.2 - 0.1 + 1) * 8,
        40.0,
        40.0,
        sig(3.0),
        sig(-1.0),
    ]
    assert torch.allclose(row, torch.tensor(expected), atol=1e-5)
    # An all-zero cell sits at its own centre with the anchor's size.
    assert torch.allclose(out[0, 0], torch.tensor([4.0, 4.0, 20.0, 40.0, 0.5, 0.5]))


def test_decode_matches_a_loop_reference():
    torch.manual_seed(0)
    A, H, W, C, stride, s = 2, 3, 4, 2, 16, 1.1
    raw = torch.randn(2, A, H, W, 5 + C)
    anchors = torch.tensor([[10.0, 13.0], [33.0, 23.0]])
    out = decode_head(raw, anchors, stride, s)
    for b in range(2):
        for a in range(A):
            for y in range(H):
                for x in range(W):
                    r = raw[b, a, y, x]
                    want = torch.cat([
                        ((r[0].sigmoid() * s - (s - 1) / 2 + x) * stride).view(1),
                        ((r[1].sigmoid() * s - (s - 1) / 2 + y) * stride).view(1),
                        r[2:4].exp() * anchors[a],
                        r[4:].sigmoid(),
                    ])  # fmt: skip
                    assert torch.allclose(out[b, (a * H + y) * W + x], want, atol=1e-5)
