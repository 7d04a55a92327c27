"""CPU and memory limits for local replicas, with the kernel's own mechanisms.

``resources.limits.cpu`` becomes a CFS quota (cgroup v2 ``cpu.max``, or v1
``cpu.cfs_quota_us``/``cpu.cfs_period_us``); ``limits.memory`` becomes
``memory.max`` (v2) or ``memory.limit_in_bytes`` (v1). When the cgroup
filesystem is not writable (no root, no delegation), the limits cannot be set:
the caller warns and runs without them.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")
PERIOD_US = 100_000
_UNITS = {
    "": 1,
    "k": 1000,
    "M": 1000**2,
    "G": 1000**3,
    "T": 1000**4,
    "Ki": 1024,
    "Mi": 1024**2,
    "Gi": 1024**3,
    "Ti": 1024**4,
    "m": 0.001,
}


def parse_quantity(text: str) -> float:
    """Kubernetes resource quantities: '500m' → 0.5, '2' → 2, '1Gi' → 1073741824."""
    match = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", str(text).strip())
    if not match or match[2] not in _UNITS:
        raise ValueError(f"not a Kubernetes quantity: {text!r}")
    return float(match[1]) * _UNITS[match[2]]


@dataclass
class Cgroup:
    """The directories of one replica's cgroup (v1: one per controller; v2: one)."""

    name: str
    paths: list[Path]

    def procs_files(self) -> list[Path]:
        return [p / "cgroup.procs" for p in self.paths]

    def join(self, pid: int) -> None:
        for procs in self.procs_files():
            procs.write_text(str(pid))

    def remove(self) -> None:
        for path in self.paths:
            with contextlib.suppress(OSError):
                path.rmdir()


def _v2() -> bool:
    return (ROOT / "cgroup.controllers").is_file()


def create(name: str, cpu_limit: float | None, memory_limit: int | None) -> Cgroup:
    """Create the cgroup with the limits; raise OSError when not permitted."""
    paths: list[Path] = []
    if _v2():
        path = ROOT / name
        path.mkdir(exist_ok=True)
        if cpu_limit:
            (path / "cpu.max").write_text(f"{math.ceil(cpu_limit * PERIOD_US)} {PERIOD_US}")
        if memory_limit:
            (path / "memory.max").write_text(str(memory_limit))
        paths.append(path)
        return Cgroup(name, paths)
    if cpu_limit:
        cpu = ROOT / "cpu" / name
        cpu.mkdir(exist_ok=True)
        (cpu / "cpu.cfs_period_us").write_text(str(PERIOD_US))
        (cpu / "cpu.cfs_quota_us").write_text(str(math.ceil(cpu_limit * PERIOD_US)))
        paths.append(cpu)
    if memory_limit:
        memory = ROOT / "memory" / name
        memory.mkdir(exist_ok=True)
        (memory / "memory.limit_in_bytes").write_text(str(memory_limit))
        paths.append(memory)
    return Cgroup(name, paths)


def preexec_joiner(cgroup: Cgroup | None) -> Callable[[], None] | None:
    """A ``preexec_fn`` that moves the child into the cgroup before it execs."""
    if cgroup is None:
        return None
    files = [str(p) for p in cgroup.procs_files()]

    def join() -> None:
        pid = str(os.getpid())
        for procs in files:
            with open(procs, "w") as fh:  # noqa: PTH123 - runs between fork and exec
                fh.write(pid)

    return join
