"""The architecture as a test: one import name; the torch-free core and the ONNX side never
import torch (nor the torch side); the torch side never imports the ONNX side. Checked in the
code (every import statement, function-level ones included) and by running the torch-free
commands in processes where torch cannot be imported."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import ROOT
from http_server import detect, free_port, request, server_env, start_server, stop_server

FOLDERS = {"core": "yolo4.core", "detector": "yolo4.detector", "training": "yolo4.training",
           "serving": "yolo4.serving", "yolo4": "yolo4"}  # fmt: skip
# package -> what it may never import (top-level modules or yolo4 subpackages)
FORBIDDEN = {
    "yolo4.core": ("torch", "torchvision", "onnxruntime", "onnx", "bentoml", "yolo4.detector", "yolo4.training",
                   "yolo4.serving", "yolo4.cli", "yolo4.commands"),
    "yolo4.detector": ("yolo4.training", "yolo4.serving", "yolo4.cli", "yolo4.commands", "bentoml", "onnxruntime"),
    "yolo4.training": ("yolo4.serving", "yolo4.cli", "yolo4.commands", "bentoml", "onnxruntime"),
    "yolo4.serving": ("torch", "torchvision", "yolo4.detector", "yolo4.training", "yolo4.cli", "yolo4.commands"),
}  # fmt: skip


def modules() -> dict[str, Path]:
    found = {}
    for folder, package in FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            name = ".".join((package, *parts)).removesuffix(".__init__")
            found[name] = path
    return found


def imported(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import (the project uses absolute yolo4.* imports)"
            names.add(node.module)
    return names


def test_layers_import_only_what_they_may():
    violations = []
    for name, path in modules().items():
        package = next((p for p in FORBIDDEN if name == p or name.startswith(p + ".")), None)
        for target in imported(path):
            if target.split(".")[0] in ("detector", "training", "serving", "core"):
                violations.append(f"{name} imports {target}: use the yolo4.* name")
            if package and any(target == f or target.startswith(f + ".") for f in FORBIDDEN[package]):
                violations.append(f"{name} imports {target}")
    assert not violations, "\n".join(violations)


def blocked_torch(tmp: Path, names=("torch", "torchvision")) -> Path:
    """A folder that, first on PYTHONPATH, makes torch (or ``names``) unimportable in every
    process started from here (BentoML's workers included)."""
    for name in names:
        (tmp / "blocked" / name).mkdir(parents=True, exist_ok=True)
        (tmp / "blocked" / name / "__init__.py").write_text(f"raise ModuleNotFoundError('{name} is blocked in this test', name='{name}')\n")
    return tmp / "blocked"


def no_torch_env(tmp: Path) -> dict[str, str]:
    env = server_env(tmp, None)
    env["PYTHONPATH"] = os.pathsep.join([str(blocked_torch(tmp)), env["PYTHONPATH"]])
    return env


def test_every_torch_free_module_imports_without_torch(tmp_path):
    torch_free = [n for n in modules() if n.split(".")[:2] in (["yolo4", "core"], ["yolo4", "serving"])]
    torch_free += ["yolo4", "yolo4.cli"] + [f"yolo4.commands.{m}" for m in ("detect", "eval", "models", "quantize", "serve",
                                                                            "weights", "predictors", "train_args")]  # fmt: skip
    code = "import importlib, sys\nfor name in sys.argv[1:]:\n    importlib.import_module(name)\nprint('ok')\n"
    run = subprocess.run([sys.executable, "-c", code, *torch_free], capture_output=True, text=True, cwd=tmp_path,
                         env=no_torch_env(tmp_path), timeout=300)  # fmt: skip
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr[-3000:]


def yolo4(tmp: Path, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "yolo4", *map(str, args)], capture_output=True, text=True, cwd=tmp,
                          env=no_torch_env(tmp), timeout=300)  # fmt: skip


@pytest.fixture(scope="module")
def onnx_file():
    from yolo4.serving import bundled

    name = bundled.default_model_name()
    return bundled.model_files(name)["int8"], bundled.sample_image(name), bundled.card(name)


def test_detect_eval_info_and_serve_run_without_torch(tmp_path, onnx_file):
    model, sample, card = onnx_file
    run = yolo4(tmp_path, "detect", sample, "--onnx", model, "--out", tmp_path / "det")
    assert run.returncode == 0, run.stderr[-2000:]
    assert json.loads((tmp_path / "det" / f"{sample.stem}.json").read_text())["detections"]

    gate = card["gate"]
    run = yolo4(tmp_path, "eval", "--data", gate["data"], "--split", gate["split"], "--onnx", model, "--no-plots",
                "--out", tmp_path / "eval")  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    assert json.loads((tmp_path / "eval" / "summary.json").read_text())["metrics"]["mAP50"] > 0.3

    run = yolo4(tmp_path, "info", "--onnx", model)
    assert run.returncode == 0 and "int8" in run.stdout, run.stderr[-2000:]

    run = yolo4(tmp_path, "train", "--data", "bccd")  # the training side names what is missing
    assert run.returncode == 2 and "pip install 'yolo4[train]'" in run.stderr and "Traceback" not in run.stderr

    port = free_port()
    srv = start_server([sys.executable, "-m", "yolo4", "serve", "--onnx", str(model), "--port", str(port)], tmp_path,
                       no_torch_env(tmp_path))  # fmt: skip
    try:
        assert detect(srv, sample.name, sample.read_bytes())["detections"]
        assert request(srv, "GET", "/info")[0] == 200
    finally:
        stop_server(srv)
    assert "torch is blocked" not in srv.log.read_text(errors="replace")


def test_the_wheel_installs_one_import_name(built_wheel):
    names = zipfile.ZipFile(built_wheel).namelist()
    top = {n.split("/")[0] for n in names}
    assert {t for t in top if not t.endswith(".dist-info")} == {"yolo4"}, top
    for expected in ("yolo4/cli.py", "yolo4/core/config.py", "yolo4/detector/model.py", "yolo4/training/trainer.py",
                     "yolo4/serving/service.py", "yolo4/data/coco80.names", "yolo4/serving/models/"):  # fmt: skip
        assert any(n.startswith(expected) for n in names), expected
    assert not any(n.startswith(("yolo4/tests", "tests/", "bench/")) for n in names)


def test_the_edge_install_needs_only_numpy_opencv_onnxruntime_and_tqdm(tmp_path, onnx_file):
    """``pip install yolo4[edge]``: the edge entry point and yolo4 detect --onnx with every other
    extra's library unimportable (what the base install and the edge extra do not bring)."""
    model, sample, _ = onnx_file
    others = ("torch", "torchvision", "yaml", "PIL", "pycocotools", "matplotlib", "bentoml", "fastapi", "onnx",
              "albumentations")  # fmt: skip
    env = server_env(tmp_path, None)
    env["PYTHONPATH"] = os.pathsep.join([str(blocked_torch(tmp_path, others)), env["PYTHONPATH"]])
    for command in (["-m", "yolo4.edge", str(sample), "--out", "edge"], ["-m", "yolo4", "detect", str(sample), "--out", "det"]):
        run = subprocess.run([sys.executable, *command], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
        assert run.returncode == 0, run.stderr[-3000:]
        assert (tmp_path / command[-1] / f"{sample.stem}.json").is_file()
