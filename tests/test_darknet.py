import numpy as np
import pytest
from darknet_files import write_random_weights
from yolo4.detector.darknet_cfg import DarknetCfgError, read_cfg
from yolo4.detector.darknet_weights import DarknetWeightsError, darknet_weights_bytes, parse_header
from yolo4.detector.loading import load_darknet

OFFICIAL_SIZES = {"yolov4": 257_717_640, "yolov4-tiny": 24_251_276}


@pytest.mark.parametrize("name", ["yolov4-tiny", "yolov4"])
def test_round_trip_is_byte_exact_and_official_size(name, darknet_dir, tmp_path):
    cfg = darknet_dir / f"{name}.cfg"
    path = tmp_path / f"{name}.weights"
    write_random_weights(load_darknet(cfg, None).model, path, seed=1)
    assert path.stat().st_size == OFFICIAL_SIZES[name]
    loaded = load_darknet(cfg, path)
    assert darknet_weights_bytes(loaded.model, loaded.extra["darknet_header"]) == path.read_bytes()


def test_old_header_with_32bit_seen(darknet_dir, tmp_path):
    cfg = darknet_dir / "yolov4-tiny.cfg"
    path = tmp_path / "old.weights"
    write_random_weights(load_darknet(cfg, None).model, path, header=(0, 1, 0), seen=12345)
    assert path.stat().st_size == OFFICIAL_SIZES["yolov4-tiny"] - 4
    loaded = load_darknet(cfg, path)
    header = loaded.extra["darknet_header"]
    assert (header.major, header.minor, header.seen, header.seen_is_64bit) == (0, 1, 12345, False)
    assert darknet_weights_bytes(loaded.model, header) == path.read_bytes()


def test_loaded_values_land_in_the_right_tensors(darknet_dir, tmp_path):
    cfg = darknet_dir / "yolov4-tiny.cfg"
    path = tmp_path / "t.weights"
    write_random_weights(load_darknet(cfg, None).model, path)
    model = load_darknet(cfg, path).model
    values = np.fromfile(path, "<f4", offset=20)
    first = model.backbone.stem[0]  # layer 0: 32 filters, 3x3, BN
    np.testing.assert_array_equal(first.bn.bias.detach().numpy(), values[0:32])
    np.testing.assert_array_equal(first.bn.weight.detach().numpy(), values[32:64])
    np.testing.assert_array_equal(first.bn.running_var.detach().numpy(), values[96:128])
    np.testing.assert_array_equal(first.conv.weight.detach().numpy().ravel(), values[128 : 128 + 32 * 3 * 9])
    last = model.heads[0].pred  # the last conv in the file: stride-16 head, bias then weights
    n = last.weight.numel()
    np.testing.assert_array_equal(last.weight.detach().numpy().ravel(), values[-n:])
    np.testing.assert_array_equal(last.bias.detach().numpy(), values[-n - 255 : -n])


def test_too_short_file_names_the_layer(darknet_dir, tmp_path):
    cfg = darknet_dir / "yolov4-tiny.cfg"
    path = tmp_path / "short.weights"
    write_random_weights(load_darknet(cfg, None).model, path)
    path.write_bytes(path.read_bytes()[:-4000])
    with pytest.raises(DarknetWeightsError) as err:
        load_darknet(cfg, path)
    message = str(err.value)
    # The last conv of yolov4-tiny.cfg (layer 36) predicts 255 channels from 256: 255 + 255 * 256 values.
    assert "too short at layer 36 (yolov4-tiny.cfg:" in message
    assert "filters=255" in message and "expects 65535 values" in message


def test_too_long_file_is_refused(darknet_dir, tmp_path):
    cfg = darknet_dir / "yolov4-tiny.cfg"
    path = tmp_path / "long.weights"
    write_random_weights(load_darknet(cfg, None).model, path)
    path.write_bytes(path.read_bytes() + b"\0" * 40)
    with pytest.raises(DarknetWeightsError, match="10 values left after the last layer"):
        load_darknet(cfg, path)


def test_wrong_header_is_refused(darknet_dir, tmp_path):
    path = tmp_path / "bad.weights"
    path.write_bytes(np.array([123456, 7, 0, 0, 0], "<i4").tobytes() + b"\0" * 64)
    with pytest.raises(DarknetWeightsError, match="not a Darknet .weights file"):
        load_darknet(darknet_dir / "yolov4-tiny.cfg", path)
    path.write_bytes(b"\x01\x02")
    with pytest.raises(DarknetWeightsError, match="too short for a Darknet .weights header"):
        parse_header(path.read_bytes(), path)


def test_cfg_that_differs_from_the_architecture_names_the_line(darknet_dir, tmp_path):
    text = (darknet_dir / "yolov4-tiny.cfg").read_text()
    lines = text.splitlines()
    target = next(i for i, line in enumerate(lines) if line.strip() == "filters=128")
    lines[target] = "filters=96"
    cfg = tmp_path / "edited.cfg"
    cfg.write_text("\n".join(lines))
    with pytest.raises(DarknetCfgError, match=r"edited.cfg:\d+: layer \d+ \[convolutional\].*filters=96 \(expected 128\)"):
        load_darknet(cfg, None)


def test_cfg_keeps_training_keys_for_the_trainer(darknet_dir):
    from yolo4.training.loss_config import darknet_loss

    config, train = read_cfg(darknet_dir / "yolov4.cfg")
    loss, ignored = darknet_loss(train.yolo)
    assert (loss.iou_loss, loss.iou_normalizer, loss.iou_thresh, loss.ignore_thresh) == ("ciou", 0.07, 0.213, 0.7)
    assert [h.scale_x_y for h in config.heads] == [1.2, 1.1, 1.05]
    assert [h.anchors for h in config.heads][2] == ((142, 110), (192, 243), (459, 401))
    assert (train.momentum, train.decay, train.burn_in, train.mosaic) == (0.949, 0.0005, 1000, True)
    assert config.input_size == (608, 608) and config.preprocess.resize == "stretch"
    assert {"jitter", "max_delta", "nms_kind"} <= set(ignored) and "iou_thresh" not in ignored
    assert train.notes == ()  # the three heads agree on every training key


def test_heads_that_disagree_on_a_training_key_are_reported(darknet_dir, tmp_path):
    text = (darknet_dir / "yolov4.cfg").read_text()
    cfg = tmp_path / "edited.cfg"
    cfg.write_text(text.replace("ignore_thresh = .7", "ignore_thresh = .5", 1))
    _, train = read_cfg(cfg)
    assert len(train.notes) == 1 and "ignore_thresh" in train.notes[0] and ".5" in train.notes[0]


def test_unsupported_cfg_is_a_clear_error(darknet_dir):
    with pytest.raises(DarknetCfgError, match="new_coords"):
        read_cfg(darknet_dir / "yolov4-csp.cfg")
