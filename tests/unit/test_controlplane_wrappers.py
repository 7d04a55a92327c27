"""The control plane's wrapper modules: pinned as the build expects, and the Kubernetes
one still what its generator makes of the release's own go.mod."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from tests.conftest import requirement_missing
from tests.controlplane.cluster import KUBERNETES_VERSION, WRAPPERS, Wrapper
from tests.controlplane.kubernetes_mod import wrapper

HERE = Path(__file__).resolve().parents[1] / "controlplane"


def _replaces(text: str) -> dict[str, str]:
    return dict(re.findall(r"^\s*(\S+) => (\S+ \S+)\s*$", text, re.MULTILINE))


@pytest.mark.parametrize("wrapped", WRAPPERS, ids=lambda w: w.name)
def test_each_wrapper_declares_what_the_build_makes(wrapped: Wrapper) -> None:
    try:
        edit = subprocess.run(
            ["go", "mod", "edit", "-json"],
            cwd=wrapped.directory,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
    except OSError:
        requirement_missing("Go 1.26")
    mod = json.loads(edit.stdout)
    assert {t["Path"] for t in mod["Tool"]} == set(wrapped.packages)
    assert mod["Go"].startswith("1.26")
    assert (wrapped.directory / "go.sum").stat().st_size > 0


def test_every_staging_module_is_replaced_by_its_published_version() -> None:
    mod = (HERE / "kubernetes" / "go.mod").read_text()
    assert f"k8s.io/kubernetes {KUBERNETES_VERSION}" in mod
    replaces = _replaces(mod)
    minor, patch = KUBERNETES_VERSION.split(".")[1:]
    staging = {m: v for m, v in replaces.items() if m.startswith("k8s.io/")}
    assert len(staging) >= 30
    assert all(v == f"{m} v0.{minor}.{patch}" for m, v in staging.items()), staging
    # The generator, run on the release's go.mod as the module cache holds it, gives the
    # same replacements: nobody edited the list by hand, and none is missing.
    try:
        cache = subprocess.run(
            ["go", "env", "GOMODCACHE"], capture_output=True, text=True, check=True, timeout=60
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        requirement_missing("Go 1.26")
    served = Path(cache) / "cache" / "download" / "k8s.io" / "kubernetes" / "@v"
    served_mod = served / f"{KUBERNETES_VERSION}.mod"
    if not served_mod.is_file():
        requirement_missing(
            f"k8s.io/kubernetes {KUBERNETES_VERSION} in the module cache (make k8s-control-plane)"
        )
    assert _replaces(wrapper(KUBERNETES_VERSION, served_mod.read_text())) == replaces
