"""A real ``bentoml serve`` / ``yolo4 serve`` on a free loopback port, and a stdlib HTTP
client for it: shared by the service tests."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
MAX_UPLOAD_MB, MAX_IMAGES = 1, 4


@dataclass
class Server:
    host: str
    port: int
    proc: subprocess.Popen
    log: Path

    def log_tail(self, n: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(server: Server, method: str, path: str, body=b"", headers=None, chunked=False):
    """(status, content type, body bytes) of one request on a fresh connection."""
    conn = http.client.HTTPConnection(server.host, server.port, timeout=60)
    try:
        conn.request(method, path, body, headers or {}, encode_chunked=chunked)
        response = conn.getresponse()
        return response.status, response.getheader("Content-Type", ""), response.read()
    finally:
        conn.close()


def multipart(files=(), fields=None) -> tuple[bytes, dict[str, str]]:
    """``files``: (field, filename, data, content type) tuples; ``fields``: plain values."""
    boundary = uuid.uuid4().hex
    chunks = []
    for name, value in (fields or {}).items():
        chunks.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for name, filename, data, content_type in files:
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
        chunks.append(f"{head}Content-Type: {content_type}\r\n\r\n".encode() + data + b"\r\n")
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def post_images(server: Server, path: str, images: list[tuple[str, bytes]], field="image", **fields):
    body, headers = multipart([(field, name, data, "image/jpeg") for name, data in images], fields)
    return request(server, "POST", path, body, headers)


def detect(server: Server, name: str, data: bytes, **fields) -> dict:
    status, _, body = post_images(server, "/detect", [(name, data)], **fields)
    assert status == 200, body[:500]
    return json.loads(body)


def server_env(tmp: Path, model: Path | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("YOLO4_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))  # run from tmp
    env.update(BENTOML_HOME=str(tmp / "bentoml"), BENTOML_DO_NOT_TRACK="True", YOLO4_MAX_UPLOAD_MB=str(MAX_UPLOAD_MB),
               YOLO4_CACHE=str(tmp / "cache"),
               YOLO4_MAX_IMAGES=str(MAX_IMAGES))  # fmt: skip
    if model is not None:
        env["YOLO4_MODEL"] = str(model)
    return env


def serve_command(port: int, root: Path = ROOT) -> list[str]:
    return [sys.executable, "-m", "bentoml", "serve", "yolo4.serving.service:Yolo4Http", "--host", "127.0.0.1",
            "--port", str(port), "--working-dir", str(root)]  # fmt: skip


def yolo4_serve_command(model: Path | None, port: int) -> list[str]:
    """``yolo4 serve``: checks the model, then becomes ``bentoml serve`` (same process); no
    model: the bundled one."""
    return [sys.executable, "-m", "yolo4", "serve", "--port", str(port)] + (["--onnx", str(model)] if model else [])


def start_server(command: list[str], tmp: Path, env: dict[str, str]) -> Server:
    """Start ``command`` in ``tmp`` and wait until ``/readyz`` answers 200."""
    port = int(command[command.index("--port") + 1])
    log = tmp / "server.log"
    with open(log, "wb") as f:
        proc = subprocess.Popen(command, stdout=f, stderr=subprocess.STDOUT, cwd=tmp, env=env, start_new_session=True)
    srv = Server("127.0.0.1", port, proc, log)
    deadline = time.monotonic() + 90
    while True:
        assert proc.poll() is None, f"the server exited ({proc.returncode}):\n{srv.log_tail()}"
        assert time.monotonic() < deadline, f"/readyz never answered 200:\n{srv.log_tail()}"
        try:
            if request(srv, "GET", "/readyz")[0] == 200:
                return srv
        except OSError:
            pass
        time.sleep(0.3)


def stop_server(srv: Server) -> None:
    """Terminate a server still running (its workers too, whatever happens)."""
    proc = srv.proc
    if proc.poll() is None:
        workers = psutil.Process(proc.pid).children(recursive=True)  # in process groups of their own
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            for p in [psutil.Process(proc.pid), *workers]:
                p.kill()
            proc.wait(timeout=30)
