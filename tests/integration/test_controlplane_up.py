"""`make k8s-up` (python -m tests.controlplane up): one line to export, Ready kwok nodes
behind it, and nothing left running after SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

pytestmark = [pytest.mark.integration, pytest.mark.controlplane]


def _alive(pids: list[int]) -> list[int]:
    alive = []
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        alive.append(pid)
    return alive


def test_k8s_up_prints_the_kubeconfig_and_stops_everything_on_sigterm(
    control_plane: object, tmp_path: Path
) -> None:
    del control_plane  # built (and proven to start) by the session fixture
    up = subprocess.Popen(
        [sys.executable, "-m", "tests.controlplane", "up", "--workdir", str(tmp_path / "up")],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert up.stdout is not None
        line = up.stdout.readline().strip()
        assert line.startswith("export KUBECONFIG="), up.stderr.read() if up.poll() else line
        kubeconfig = line.removeprefix("export KUBECONFIG=")
        kubectl = str(Path(sys.executable).parent / "kubectl")
        nodes = json.loads(
            subprocess.run(
                [kubectl, "--kubeconfig", kubeconfig, "get", "nodes", "-o", "json"],
                capture_output=True,
                text=True,
                check=True,
                timeout=60,
            ).stdout
        )["items"]
        assert len(nodes) == 20
        assert all(
            any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"]["conditions"])
            for n in nodes
        )
        assert {n["metadata"]["labels"]["type"] for n in nodes} == {"kwok"}
        children = [
            int(p)
            for p in subprocess.run(
                ["pgrep", "-P", str(up.pid)], capture_output=True, text=True, check=False
            ).stdout.split()
        ]
        assert len(children) == 5  # etcd, apiserver, controller-manager, scheduler, kwok
        up.send_signal(signal.SIGTERM)
        up.communicate(timeout=60)  # reads and closes the pipes
        assert up.returncode == 0
        assert _alive(children) == [], "a control plane process outlived `up`"
    finally:
        if up.poll() is None:
            up.kill()
        up.communicate(timeout=30)
