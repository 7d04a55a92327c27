"""The local target's placement check: this machine's CPU must have what the base needs.

On Kubernetes, render pins a family-specific base to its node families
(scripts/manifests/placement.py); locally there is one node, this one, so the
features the pod template's annotation lists are checked against /proc/cpuinfo.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from scripts.errors import PlacementError
from scripts.image.bases import BASE_ANNOTATION, CPU_FEATURES_ANNOTATION

CPUINFO = Path("/proc/cpuinfo")


def host_cpu_features(cpuinfo: Path = CPUINFO) -> frozenset[str] | None:
    """The first processor's flags (None: not Linux on x86, or unreadable)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return None


def check_host_runs(deployment: dict[str, Any], cpuinfo: Path = CPUINFO) -> None:
    """PlacementError when this machine's CPU lacks a feature the base needs."""
    template = deployment.get("spec", {}).get("template", {}).get("metadata", {})
    annotations = template.get("annotations") or {}
    needed = {f for f in str(annotations.get(CPU_FEATURES_ANNOTATION, "")).split(",") if f}
    if not needed:
        return
    have = host_cpu_features(cpuinfo)
    if have is None:
        return  # cannot tell (no /proc/cpuinfo flags): let the server try
    lacking = sorted(needed - have)
    if lacking:
        base = annotations.get(BASE_ANNOTATION, "?")
        raise PlacementError(
            f"this machine's CPU cannot run base {base}: it lacks {', '.join(lacking)}",
            cause="the base was compiled for another CPU family (its server would die with SIGILL)",
            fix="deploy it on a cluster whose nodes have those features, or build with a "
            "base this machine runs (--base stock, or a local base; docs/images.md)",
        )
