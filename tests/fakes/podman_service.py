"""podman's Docker-compatible API service on a private unix socket (no Docker daemon here).

Settings from ../shared/REFERENCE.md §6: runc, cgroupfs, vfs storage in temp
dirs, no network namespace; loopback registries are marked insecure in a
private registries.conf. Nothing can be pulled, so bases are imported from a
rootfs tar.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path


def podman_available() -> bool:
    return shutil.which("podman") is not None and shutil.which("runc") is not None


class PodmanService:
    def __init__(self, insecure_registries: list[str]) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="podman-")
        root = Path(self._tmp.name)
        self.socket = root / "podman.sock"
        (root / "containers.conf").write_text(
            '[engine]\nruntime = "runc"\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\n'
            '[containers]\ndefault_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]\n'
            'netns = "none"\n'
        )
        (root / "storage.conf").write_text(
            f'[storage]\ndriver = "vfs"\nrunroot = "{root}/run"\ngraphroot = "{root}/graph"\n'
        )
        registries = "".join(
            f'[[registry]]\nlocation = "{r}"\ninsecure = true\n' for r in insecure_registries
        )
        (root / "registries.conf").write_text(f"unqualified-search-registries = []\n{registries}")
        self.env = {
            **os.environ,
            "CONTAINERS_CONF": str(root / "containers.conf"),
            "CONTAINERS_STORAGE_CONF": str(root / "storage.conf"),
            "CONTAINERS_REGISTRIES_CONF": str(root / "registries.conf"),
        }
        self.root = root
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def start(self) -> PodmanService:
        log = (self.root / "service.log").open("wb")
        self._proc = subprocess.Popen(
            ["podman", "system", "service", "--time=0", self.url],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError((self.root / "service.log").read_text()[-2000:])
            if self.socket.exists():
                return self
            time.sleep(0.1)
        raise RuntimeError("podman service did not start in 20 s")

    def podman(self, *args: str) -> str:
        proc = subprocess.run(
            ["podman", *args], env=self.env, capture_output=True, text=True, timeout=120, check=True
        )
        return proc.stdout

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None
        # vfs layers are plain directories; podman's own cleanup is best effort.
        subprocess.run(
            ["podman", "system", "reset", "--force"],
            env=self.env,
            capture_output=True,
            timeout=60,
            check=False,
        )
        self._tmp.cleanup()
