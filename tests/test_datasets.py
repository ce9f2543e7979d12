import numpy as np
import pytest
from synthetic import make_images, write_coco, write_voc, write_yolo
from yolo4.core.data_config import DataConfigError, load_data_config
from yolo4.core.datasets import DatasetError, load_split


@pytest.mark.parametrize("writer", [write_voc, write_coco, write_yolo])
def test_every_format_reads_the_same_boxes(writer, tmp_path):
    truth = make_images(tmp_path / "truth", seed=4)
    dataset = load_split(writer(tmp_path / "ds", seed=4), "train")
    assert dataset.class_names == ("red", "green") and not dataset.problems
    assert len(dataset) == len(truth)
    by_name = {s.image_path.name: s for s in dataset.samples}
    for path, boxes, labels in truth:
        sample = by_name[path.name]
        np.testing.assert_allclose(sample.boxes, boxes, atol=1e-3)
        np.testing.assert_array_equal(sample.labels, labels)
        assert sample.size == (96, 128)


def test_coco_keeps_category_ids_and_image_ids(tmp_path):
    dataset = load_split(write_coco(tmp_path), "train")
    assert dataset.category_ids == (3, 7)
    assert [s.image_id for s in dataset.samples] == list(range(100, 106))
    assert dataset.annotation_file == tmp_path / "ann.json"


def test_problems_are_reported_with_file_and_object_then_skipped(tmp_path):
    yaml = write_voc(tmp_path)
    ann = tmp_path / "Annotations"
    text = (ann / "img0.xml").read_text()
    (ann / "img0.xml").write_text(text.replace("<name>red</name>", "<name>blue</name>", 1).replace("<name>green</name>", "<name>blue</name>", 1))
    (ann / "img1.xml").write_text("<annotation><filename>img1.jpg</filename>\n<object>")  # truncated XML
    (tmp_path / "JPEGImages" / "img2.jpg").unlink()
    (tmp_path / "JPEGImages" / "img3.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    text = (ann / "img4.xml").read_text()
    (ann / "img4.xml").write_text(text.replace("<xmax>", "<xmax>-", 1))

    dataset = load_split(yaml, "train")
    problems = [str(p) for p in dataset.problems]
    assert any("img0.xml object 0: unknown class 'blue'" in p for p in problems)
    assert any("img1.xml:2: malformed XML" in p for p in problems)
    assert any("img2.jpg: image file is missing" in p for p in problems)
    assert any("img3.jpg: unreadable image" in p for p in problems)
    assert any("img4.xml object 0" in p and "zero or negative size" in p for p in problems)
    assert len(dataset) == 3  # img1 (bad annotation), img2, img3 (no image) are out; img0, img4 keep the rest
    assert "problems skipped" in dataset.summary()
    with pytest.raises(DatasetError, match="run without --strict"):
        load_split(yaml, "train", strict=True)


def test_yolo_label_errors_name_the_line(tmp_path):
    yaml = write_yolo(tmp_path)
    label = tmp_path / "labels" / "train" / "img0.txt"
    label.write_text(label.read_text() + "5 0.5 0.5 0.1 0.1\nnot a row\n0 1.5 1.5 0.2 0.2\n")
    problems = [str(p) for p in load_split(yaml, "train").problems]
    lines = len(label.read_text().splitlines())
    assert any(f"img0.txt:{lines - 2}: class 5 outside 0..1" in p for p in problems)
    assert any(f"img0.txt:{lines - 1}: expected 'class cx cy w h'" in p for p in problems)
    assert any("img0.txt object" in p and "outside the 128x96 image" in p for p in problems)


def test_bad_coco_json_and_yaml_are_clear_errors(tmp_path):
    yaml = write_coco(tmp_path)
    (tmp_path / "ann.json").write_text('{"images": [], "annotations": [}')
    with pytest.raises(DatasetError, match=r"ann.json:1: not valid JSON"):
        load_split(yaml, "train")
    (tmp_path / "ann.json").write_text('{"foo": 1}')
    with pytest.raises(DatasetError, match="not a COCO detection file"):
        load_split(yaml, "train")
    bad = tmp_path / "bad.yaml"
    bad.write_text("format: kitti\nsplits: {train: x}\n")
    with pytest.raises(DataConfigError, match="format must be one of"):
        load_data_config(bad)


def test_shipped_yamls_read_the_shared_data(monkeypatch):
    from conftest import SHARED, shared_path

    shared_path("datasets", "bccd")
    monkeypatch.setenv("YOLO4_SHARED", str(SHARED))
    bccd = load_split("bccd", "val")
    assert bccd.class_names == ("RBC", "WBC", "Platelets") and len(bccd) == 87
    assert [str(p) for p in bccd.problems] == [
        f"{SHARED}/datasets/bccd/Annotations/BloodImage_00338.xml object 12: box [504.0, 337.0, 504.0, 337.0] has zero or negative size"
    ]
    coco = load_split("coco-mini", "val")
    assert len(coco.class_names) == 80 and coco.category_ids[-1] == 90 and len(coco) == 79
