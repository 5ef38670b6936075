"""``facefuse serve`` in a subprocess, and the LFW photos (read in place from the shared data)
that the service's tests send it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

BUSH, POWELL, BLAIR = "George_W_Bush", "Colin_Powell", "Tony_Blair"


def photo(shared_data: Path, name: str, n: int = 1) -> Path:
    """The ``n``-th LFW photo of ``name``."""
    return shared_data / "lfw" / "lfw" / name / f"{name}_{n:04d}.jpg"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``facefuse serve`` in a subprocess on a free loopback port, ready when made."""

    def __init__(self, *options: str) -> None:
        import httpx

        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "facefuse", "serve", "--port", str(port), *options],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            env={**os.environ, "FACEFUSE_API_KEY": ""})
        deadline = time.monotonic() + 120
        while True:
            assert self.process.poll() is None, self.process.stdout.read().decode()
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not answer /healthz"
            time.sleep(0.25)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)
