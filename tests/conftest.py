"""Shared fixtures. Servers started here bind 127.0.0.1 and are always stopped."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import pytest

from scripts.cli import main
from scripts.transfer import RetryPolicy
from tests.fakes.savedmodel_factory import write_saved_model

REPO_ROOT = Path(__file__).resolve().parent.parent
# `make test` sets it: there a missing requirement (a Debian tool, a wheel) fails the
# test that needs it instead of skipping it, so a broken install cannot pass quietly.
STRICT = os.environ.get("TF_PIPELINE_STRICT_TESTS") == "1"


def requirement_missing(what: str) -> NoReturn:
    """Skip for a partial setup; fail under `make test`, which installs everything."""
    if STRICT:
        pytest.fail(f"{what} is missing, and `make test` installs it: failing, not skipping")
    pytest.skip(f"{what} is missing (`make test` installs it)")


@dataclass(frozen=True)
class QuickRetry(RetryPolicy):
    """The default RetryPolicy (the same attempts and timeouts) with milliseconds between
    attempts instead of 0.5 s doubling: for tests of what is retried and when it gives up,
    where the default waits are only sleep. Patch it in where the code makes its policy."""

    initial_backoff_s: float = 0.01
    max_backoff_s: float = 0.05


@dataclass
class CLIResult:
    exit_code: int
    stdout: str
    stderr: str

    def json(self) -> dict[str, object]:
        data = json.loads(self.stdout)
        assert isinstance(data, dict)
        return data


@pytest.fixture
def cli(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Callable[..., CLIResult]:
    """Run ``python -m scripts ARGS`` in-process; returns exit code and captured streams."""
    monkeypatch.delenv("GITHUB_ACTIONS", raising=False)

    def run(*args: str | Path) -> CLIResult:
        capsys.readouterr()
        code = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return CLIResult(code, out, err)

    return run


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    """A synthetic digits-like SavedModel version dir (no TensorFlow needed)."""
    return write_saved_model(tmp_path / "export" / "digits" / "1")


@pytest.fixture
def packaged(cli: Callable[..., CLIResult], model_dir: Path, tmp_path: Path) -> dict[str, object]:
    result = cli(
        "package",
        model_dir,
        "--name",
        "digits",
        "--version",
        "1",
        "--out",
        tmp_path / "release",
        "--json",
    )
    assert result.exit_code == 0, result.stderr
    return result.json()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def digits_release(work: Path, version: int, *, seed: int | None = None) -> Path:
    """Train digits vN (3 epochs) with models/digits/export.py and package it as a release
    archive, as an ML engineer would: WORK/release/digits-N.tar.gz (runs TensorFlow in a
    subprocess)."""
    subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "models" / "digits" / "export.py"),
            "--out",
            str(work / "export"),
            "--version",
            str(version),
            "--epochs",
            "3",
            *(["--seed", str(seed)] if seed is not None else []),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return package_digits(work, version)


class DigitsReleases:
    """Digits vN release archives, trained with seed N as ``digits_release(work, N, seed=N)``
    would, once per test session: the modules that deliver them only read them (a path to
    fetch, bytes to upload). Versions not made yet are trained in parallel, one process per
    core."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._archives: dict[int, Path] = {}

    def __call__(self, *versions: int) -> dict[int, Path]:
        missing = [v for v in dict.fromkeys(versions) if v not in self._archives]
        if missing:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(max(1, min(len(missing), os.cpu_count() or 1))) as pool:
                made = pool.map(lambda v: digits_release(self.root / f"v{v}", v, seed=v), missing)
                self._archives.update(zip(missing, made, strict=True))
        return {v: self._archives[v] for v in versions}


@pytest.fixture(scope="session")
def digits_releases(tmp_path_factory: pytest.TempPathFactory) -> DigitsReleases:
    """``digits_releases(1, 2)`` → {1: .../digits-1.tar.gz, 2: ...}: see DigitsReleases."""
    return DigitsReleases(tmp_path_factory.mktemp("digits-releases"))


def package_digits(work: Path, version: int, *extra: str) -> Path:
    """`python -m scripts package` WORK/export/digits/N → WORK/release/digits-N.tar.gz, .sha256."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "scripts",
            "package",
            str(work / "export" / "digits" / str(version)),
            "--name",
            "digits",
            "--version",
            str(version),
            "--out",
            str(work / "release"),
            "-q",
            *extra,
        ],
        check=True,
        capture_output=True,
        cwd=REPO_ROOT,
        timeout=120,
    )
    return work / "release" / f"digits-{version}.tar.gz"


def tree_snapshot(root: Path) -> list[str]:
    """Every path under ``root`` (for 'nothing was written here' assertions)."""
    if not root.exists():
        return []
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def run_without_tensorflow(*argv: str | Path) -> None:
    """Run ``python -m scripts ARGV`` (``scripts.cli.main``) in a fresh interpreter; fail
    unless it exits 0 without ever importing TensorFlow (the deploy path must not)."""
    code = (
        "import sys\n"
        "from scripts.cli import main\n"
        f"rc = main({[str(a) for a in argv]!r})\n"
        "assert rc == 0, rc\n"
        "assert 'tensorflow' not in sys.modules, 'tensorflow was imported'\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr


@pytest.fixture
def no_tensorflow() -> Iterator[None]:
    """Fail if the test imported TensorFlow into this process."""
    before = "tensorflow" in sys.modules
    yield
    if not before:
        assert "tensorflow" not in sys.modules, "the deploy path imported tensorflow"


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The real control plane (tests/controlplane), one per test session, always stopped.

    `make test` builds it first (`make k8s-control-plane`); run alone, the fixture builds
    what is missing (a few minutes, once: the binaries are cached)."""
    import shutil

    from tests.controlplane.cluster import ControlPlane, build_all

    if shutil.which("go") is None:
        requirement_missing("Go 1.26 (the control plane is built from Go modules)")
    plane = ControlPlane(build_all(quiet=True), tmp_path_factory.mktemp("controlplane"))
    plane.start()
    try:
        yield plane
    finally:
        plane.stop()


@pytest.fixture
def k8s_namespace(control_plane: Any, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace on the control plane (its default ServiceAccount ready), removed after."""
    import re
    import uuid

    stem = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:40].strip("-")
    name = f"{stem}-{uuid.uuid4().hex[:6]}"
    control_plane.create_namespace(name)
    try:
        yield name
    finally:
        control_plane.delete_namespace(name)
