"""Starting Locust and watching it: what the local runner and the in-cluster generator share.

Standard library only (plus the project's errors and logging): the generator image
carries this module, and nothing it does not need.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

LOCUSTFILES = {
    "rest": Path(__file__).with_name("locustfile_rest.py"),
    "grpc": Path(__file__).with_name("locustfile_grpc.py"),
}
REPO_ROOT = Path(__file__).resolve().parents[2]  # the locustfiles import scripts.loadtest
# Locust's clock starts before the first user sends (users start within its first
# second): it runs this long past the window, so every request scheduled inside the
# window is sent.
SCHEDULE_MARGIN_S = 1.0
# Then it stops sending and gives the requests still in flight up to this long to finish
# (openloop joins them before writing the samples): the run ends as soon as they are
# answered, instead of sending an unmeasured tail for a fixed time.
TAIL_S = 2.0
MASTER_PORT = 5557


@dataclass(frozen=True)
class Traffic:
    """What every generator process sends: the tracks, their rate, the request body."""

    tracks: dict[str, list[str]]  # "canary"/"baseline" → REST base URLs or gRPC HOST:PORT
    model: str
    protocol: str  # rest | grpc
    users: int  # per track
    rate: float  # requests/s per track
    duration_s: float
    warmup_s: float

    @property
    def run_time_s(self) -> float:
        """Locust's ``--run-time``: the window plus the schedule margin."""
        return self.warmup_s + self.duration_s + SCHEDULE_MARGIN_S

    @property
    def wall_time_s(self) -> float:
        """The longest a run can take: sending, then waiting for the last answers."""
        return self.run_time_s + TAIL_S


def locust_env(traffic: Traffic, payload: Path, samples: Path) -> dict[str, str]:
    """The environment the locustfiles read (scripts/loadtest/openloop.py)."""
    return {
        **os.environ,
        "TFRP_TRACKS": json.dumps(traffic.tracks),
        "TFRP_USERS": str(traffic.users),
        "TFRP_RATE": str(traffic.rate),
        "TFRP_PAYLOAD": str(payload),
        "TFRP_MODEL": traffic.model,
        "TFRP_SAMPLES": str(samples),
        "TFRP_TAIL_S": str(TAIL_S),
        "PYTHONWARNINGS": "ignore",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
    }


def locust_command(
    locust: Sequence[str],
    traffic: Traffic,
    out: Path,
    raw: Path,
    *,
    processes: int = 1,
    role: str = "standalone",  # standalone | master | worker
    workers: int = 0,
    master: tuple[str, int] = ("127.0.0.1", MASTER_PORT),
    workers_wait_s: float = 60.0,
) -> list[str]:
    """Locust's command line (after ``locust``, its program) for one role of an open-loop
    run over all tracks at once."""
    command = [*locust, "-f", str(LOCUSTFILES[traffic.protocol])]
    if role == "worker":
        return [
            *command,
            "--worker",
            "--master-host",
            master[0],
            "--master-port",
            str(master[1]),
            "--loglevel",
            "WARNING",
        ]
    users = traffic.users * len(traffic.tracks)
    command += [
        "--headless",
        "--users",
        str(users),
        "--spawn-rate",
        str(users),
        "--run-time",
        f"{math.ceil(traffic.run_time_s)}s",
        "--host",
        "http://127.0.0.1",
        "--stop-timeout",
        "10",
        "--json-file",
        str(out / "locust"),
        "--html",
        str(out / "locust.html"),
        "--csv",
        str(raw / "locust"),
        "--only-summary",
        "--loglevel",
        "WARNING",
    ]
    if role == "master":
        command += [
            "--master",
            "--master-bind-port",
            str(master[1]),
            "--expect-workers",
            str(workers),
            "--expect-workers-max-wait",
            f"{workers_wait_s:.0f}",
        ]
    elif processes > 1:
        command += ["--processes", str(processes)]
    return command


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process and its children (the --processes workers)."""
    total = 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    pids = [pid]
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        pids += [int(c) for c in children]
    except OSError:
        pass
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks
        except (OSError, IndexError, ValueError):
            continue
    return total


def cgroup_cpu_limit(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """This container's CPU limit in cores, from its cgroup (v2 cpu.max, v1 CFS quota)."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None if quota_us <= 0 else quota_us / period_us


def watch(
    proc: subprocess.Popen[bytes],
    *,
    settle_s: float,
    processes: int = 1,
    cpu_limit: float | None = None,
) -> float:
    """Wait for Locust to exit; return its peak CPU as a fraction of what it could use.

    That is one core per Locust process (each is single-threaded under gevent), or the
    container's CPU limit when that is lower: a generator throttled by its quota is as
    saturated as one that fills its core."""
    started = time.monotonic()
    cpu_start = cpu_seconds(proc.pid)
    capacity = float(max(processes, 1))
    if cpu_limit:
        capacity = min(capacity, cpu_limit)
    peak = 0.0
    while True:
        try:  # a sample a second, but return as soon as Locust exits (no idle second)
            proc.wait(timeout=1.0)
            return peak
        except subprocess.TimeoutExpired:
            pass
        if time.monotonic() - started > settle_s:
            elapsed = max(time.monotonic() - started, 1e-6)
            peak = max(peak, (cpu_seconds(proc.pid) - cpu_start) / elapsed / capacity)


@dataclass(frozen=True)
class LocustRun:
    returncode: int
    cpu: float  # peak, as a fraction of what it could use (see watch)
    log: str

    def broken(self, label: str = "locust") -> str:
        """Why the run itself failed ("" when Locust ran: exit 1 only means that some
        requests failed, and the gate judges those)."""
        if self.returncode in (0, 1):
            return ""
        return f"{label} exited with {self.returncode}: {self.log.strip()[-500:]}"


def run_locust(
    command: list[str],
    env: dict[str, str],
    log_path: Path,
    *,
    settle_s: float,
    processes: int = 1,
    cpu_limit: float | None = None,
) -> LocustRun:
    """Run Locust to its end, output to ``log_path``, watching its CPU. Raises OSError
    when it cannot start."""
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(command, env=env, stdout=log_file, stderr=subprocess.STDOUT)
        cpu = watch(proc, settle_s=settle_s, processes=processes, cpu_limit=cpu_limit)
    return LocustRun(proc.returncode, cpu, log_path.read_text(errors="replace"))
