import pytest
import torch
from yolo4.core.config import ModelConfig
from yolo4.core.presets import preset, yolov4_nano, yolov4_tiny
from yolo4.detector.darknet_weights import count_values
from yolo4.detector.decode import DecodedModel
from yolo4.detector.model import build_model, count_parameters

# Exact trainable-parameter counts for 80 classes: a change here changes every model file.
PARAMETERS = {
    "yolov4": 64_363_101,
    "yolov4-tiny": 6_056_606,
    "yolov4-small": 7_482_581,
    "yolov4-nano": 1_921_389,
}


@pytest.mark.parametrize("name", sorted(PARAMETERS))
def test_parameter_counts_and_output_shapes(name):
    config = preset(name)
    model = build_model(config).eval()
    assert count_parameters(model) == PARAMETERS[name]
    with torch.no_grad():
        raws = model(torch.zeros(2, 3, 320, 256))
    assert [tuple(r.shape) for r in raws] == [(2, 3, 320 // s, 256 // s, 85) for s in config.strides]
    with torch.no_grad():
        decoded = DecodedModel(model, config).eval()(torch.zeros(2, 3, 320, 256))
    assert decoded.shape == (2, sum(3 * (320 // s) * (256 // s) for s in config.strides), 85)


def test_scaled_variants_are_cpu_sized():
    assert 1_000_000 <= PARAMETERS["yolov4-nano"] <= 2_000_000
    assert 5_000_000 <= PARAMETERS["yolov4-small"] <= 9_000_000


def test_darknet_value_counts_match_official_files():
    # The official files are 20-byte header + float32 values (sizes from the Darknet release).
    assert 20 + 4 * count_values(build_model(preset("yolov4"))) == 257_717_640
    assert 20 + 4 * count_values(build_model(preset("yolov4-tiny"))) == 24_251_276


@pytest.mark.parametrize("classes", [1, 3, 20])
def test_any_number_of_classes(classes):
    config = yolov4_nano(class_names=[f"c{i}" for i in range(classes)])
    raws = build_model(config)(torch.zeros(1, 3, 64, 64))
    assert all(r.shape[-1] == 5 + classes for r in raws)


@pytest.mark.parametrize("act, module", [("mish", torch.nn.Mish), ("leaky", torch.nn.LeakyReLU),
                                         ("silu", torch.nn.SiLU), ("relu", torch.nn.ReLU)])  # fmt: skip
def test_activation_is_one_config_field(act, module):
    model = build_model(yolov4_nano().with_activation(act))
    acts = {type(m) for m in model.modules() if isinstance(m, (torch.nn.Mish, torch.nn.LeakyReLU, torch.nn.SiLU, torch.nn.ReLU))}
    assert acts == {module}


def test_yolov4_uses_mish_backbone_and_leaky_neck():
    model = build_model(preset("yolov4"))
    assert all(isinstance(m.act, torch.nn.Mish) for m in model.backbone.modules() if hasattr(m, "act_name"))
    assert all(isinstance(m.act, torch.nn.LeakyReLU) for m in model.neck.modules() if hasattr(m, "act_name"))


def test_config_round_trips_through_plain_dict():
    config = yolov4_tiny(class_names=["a", "b"])
    assert ModelConfig.from_dict(config.to_dict()) == config


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="backbone_act"):
        yolov4_nano().replace(backbone_act="gelu")
    with pytest.raises(ValueError, match="multiples of 32"):
        yolov4_nano().replace(input_size=(400, 416))
    with pytest.raises(ValueError, match="class_names"):
        yolov4_nano().replace(class_names=())
    with pytest.raises(ValueError, match="unknown model"):
        preset("yolov9")
