"""Run Locust headless as a subprocess and turn its output into per-track results.

The generator is watched while it runs: its own CPU (sampled from /proc), and how
late it sent requests against the open-loop schedule. A run whose generator was
saturated measured the generator, not the server; it is marked so, and the gate
can never pass it.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from scripts.errors import ConfigError, RemoteError, ToolMissingError
from scripts.loadtest.results import SAMPLES_FILE, TrackResult, percentiles, save
from scripts.log import log
from scripts.model_spec import LoadProfile
from scripts.process import find_program

LOCUSTFILES = {
    "rest": Path(__file__).with_name("locustfile_rest.py"),
    "grpc": Path(__file__).with_name("locustfile_grpc.py"),
}
REPO_ROOT = Path(__file__).resolve().parents[2]  # the locustfiles import scripts.loadtest
CPU_SATURATION = 0.90  # Locust's own warning threshold
LAG_SATURATION_MS = 100.0  # p99 of how late requests left against their schedule
MIN_RATE_FRACTION = 0.9  # the generator must send at least this share of the target
TAIL_S = 2.0


@dataclass(frozen=True)
class LoadTestRequest:
    tracks: dict[str, list[str]]  # "canary"/"baseline" → REST base URLs or gRPC HOST:PORT
    model: str
    payload: dict[str, Any] | None  # a REST body; None: made from the served signature
    profile: LoadProfile
    out: Path
    processes: int = 1
    protocol: str = "rest"  # rest | grpc
    signature_name: str = "serving_default"  # when the payload does not name one


def _cpu_seconds(pid: int) -> float:
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


def _busiest_share(pid: int, started: float, cpu_start: float, processes: int) -> float:
    elapsed = max(time.monotonic() - started, 1e-6)
    used = _cpu_seconds(pid) - cpu_start
    return used / elapsed / max(processes, 1) if processes > 1 else used / elapsed


def run_load_test(request: LoadTestRequest) -> dict[str, TrackResult]:
    """Run one Locust test over all tracks at once; return each track's result."""
    locust = find_program("locust", hint="run `make setup` (locust is a requirement)")
    if not request.tracks or not all(request.tracks.values()):
        raise ConfigError("the load test has no endpoints", fix="pass --endpoint URL")
    _check_endpoints(request)
    check_reachable(request)
    profile = request.profile
    request.out.mkdir(parents=True, exist_ok=True)
    raw = request.out / "raw"
    raw.mkdir(exist_ok=True)
    with tempfile.NamedTemporaryFile("wb", suffix=".payload", delete=False, dir=raw) as fh:
        fh.write(_payload_bytes(request))
        payload_path = fh.name
    users = profile.users * len(request.tracks)
    # A short unmeasured tail lets requests scheduled at the end of the window finish.
    run_time = profile.warmup_s + profile.duration_s + TAIL_S
    env = {
        **os.environ,
        "TFRP_TRACKS": json.dumps(request.tracks),
        "TFRP_USERS": str(profile.users),
        "TFRP_RATE": str(profile.rate),
        "TFRP_PAYLOAD": payload_path,
        "TFRP_MODEL": request.model,
        "TFRP_SAMPLES": str(raw),
        "PYTHONWARNINGS": "ignore",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
    }
    command = [
        locust,
        "-f",
        str(LOCUSTFILES[request.protocol]),
        "--headless",
        "--users",
        str(users),
        "--spawn-rate",
        str(users),
        "--run-time",
        f"{run_time:.0f}s",
        "--host",
        "http://127.0.0.1",
        "--stop-timeout",
        "10",
        "--json-file",
        str(request.out / "locust"),
        "--html",
        str(request.out / "locust.html"),
        "--csv",
        str(raw / "locust"),
        "--only-summary",
        "--loglevel",
        "WARNING",
    ]
    if request.processes > 1:
        command += ["--processes", str(request.processes)]
    log.info(
        "load test (%s): %d users, %.1f req/s per track, %.0f s (+%.0f s warm-up) on %s",
        request.protocol,
        profile.users,
        profile.rate,
        profile.duration_s,
        profile.warmup_s,
        ", ".join(f"{t}={len(u)} endpoint(s)" for t, u in request.tracks.items()),
    )
    started = time.monotonic()
    wall_start = time.time()
    with (raw / "locust.log").open("wb") as log_file:
        try:
            proc = subprocess.Popen(command, env=env, stdout=log_file, stderr=subprocess.STDOUT)
        except OSError as exc:
            raise ToolMissingError(f"cannot start locust: {exc}") from exc
        cpu_start = _cpu_seconds(proc.pid)
        peak = 0.0
        while proc.poll() is None:
            time.sleep(1.0)
            if time.monotonic() - started > profile.warmup_s + 1:
                peak = max(peak, _busiest_share(proc.pid, started, cpu_start, request.processes))
        generator_cpu = max(peak, 0.0)
    log_text = (raw / "locust.log").read_text(errors="replace")
    broken = ""
    if proc.returncode not in (0, 1):  # 1 means "some requests failed": the gate judges those
        broken = f"locust exited with {proc.returncode}: {log_text.strip()[-500:]}"
    return _results(
        request, raw, wall_start, generator_cpu, broken, cpu_warning="CPU usage above" in log_text
    )


def _check_endpoints(request: LoadTestRequest) -> None:
    if request.protocol not in LOCUSTFILES:
        raise ConfigError(
            f"unknown load-test protocol {request.protocol!r}",
            fix=f"use one of: {', '.join(LOCUSTFILES)}",
        )
    for endpoint in (e for urls in request.tracks.values() for e in urls):
        is_http = endpoint.startswith(("http://", "https://"))
        if (request.protocol == "rest") != is_http:
            raise ConfigError(
                f"endpoint {endpoint!r} does not fit the {request.protocol} protocol",
                cause="REST endpoints are http(s):// base URLs; gRPC ones are HOST:PORT "
                "(or grpc://HOST:PORT)",
                fix="pass the REST port (8501) as http://HOST:PORT, or the gRPC port "
                "(8500) with --protocol grpc",
            )


def check_reachable(request: LoadTestRequest, timeout: float = 5.0) -> None:
    """Every endpoint must answer before load is sent: a run against addresses this
    machine cannot reach (in-cluster DNS from a hosted CI runner, a replica that went
    away) would otherwise be judged as a candidate that fails every request."""
    for track, endpoints in request.tracks.items():
        for endpoint in endpoints:
            problem = (
                _rest_problem(endpoint, request.model, timeout)
                if request.protocol == "rest"
                else _grpc_problem(endpoint, timeout)
            )
            if problem:
                raise RemoteError(
                    f"the {track} endpoint {endpoint} does not answer for model "
                    f"{request.model!r}: {problem}",
                    cause="the load test runs outside the network of the endpoints (for "
                    "Kubernetes: in-cluster Service addresses from a hosted CI runner), or "
                    "the replica is not ready",
                    fix="run the pipeline where the Services resolve (a self-hosted runner "
                    "in the cluster's VPC), or pass --canary-endpoint/--baseline-endpoint "
                    "addresses this machine reaches (an internal load balancer, a "
                    "port-forward)",
                )


def _rest_problem(endpoint: str, model: str, timeout: float) -> str:
    import requests

    try:
        requests.get(
            f"{endpoint.rstrip('/')}/v1/models/{model}", timeout=timeout
        ).raise_for_status()
    except requests.RequestException as exc:
        return str(exc)
    return ""


def _grpc_problem(endpoint: str, timeout: float) -> str:
    import grpc

    from scripts.loadtest.grpc_payload import grpc_target

    with grpc.insecure_channel(grpc_target(endpoint)) as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=timeout)
        except grpc.FutureTimeoutError:
            return f"no gRPC connection within {timeout:g} s"
    return ""


def _payload_bytes(request: LoadTestRequest) -> bytes:
    from scripts.loadtest.payload import payload_bytes

    first = request.tracks.get("canary") or next(iter(request.tracks.values()))
    raw, body = payload_bytes(
        request.payload,
        protocol=request.protocol,
        endpoint=first[0],
        model=request.model,
        signature_name=request.signature_name,
    )
    (request.out / "request.json").write_text(json.dumps(body, indent=1))
    return raw


def _results(
    request: LoadTestRequest,
    raw: Path,
    wall_start: float,
    generator_cpu: float,
    broken: str,
    *,
    cpu_warning: bool,
) -> dict[str, TrackResult]:
    profile = request.profile
    rows: list[dict[str, str]] = []
    for path in sorted(raw.glob("samples-*.csv")):
        with path.open() as fh:
            rows += list(csv.DictReader(fh))
    sends: list[dict[str, str]] = []
    for path in sorted(raw.glob("sent-*.csv")):
        with path.open() as fh:
            sends += list(csv.DictReader(fh))
    # The window starts when traffic did, not when Locust was launched: its start-up
    # (a second or more, longer with --processes) would otherwise eat into the warm-up
    # and stretch the window beyond duration_s, inflating the achieved rate.
    traffic_start = min((float(r["t"]) for r in sends), default=wall_start)
    measured_from = traffic_start + profile.warmup_s
    measured_until = measured_from + profile.duration_s

    def measured(row: dict[str, str]) -> bool:
        """Scheduled inside the window (a sample's t is its completion)."""
        at = float(row["t"]) - float(row.get("latency_ms") or 0) / 1e3
        return measured_from <= at < measured_until

    results = {}
    for track, endpoints in request.tracks.items():
        mine = [r for r in rows if r["track"] == track and measured(r)]
        out = request.out / track
        out.mkdir(exist_ok=True)
        with (out / SAMPLES_FILE).open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]) if rows else ["t"])
            writer.writeheader()
            writer.writerows(mine)
        latency = np.array([float(r["latency_ms"]) for r in mine])
        lag = np.array([float(r["lag_ms"]) for r in mine])
        errors = sum(1 for r in mine if r["ok"] != "1")
        achieved = len(mine) / profile.duration_s
        sent_rate = (
            sum(1 for r in sends if r["track"] == track and measured(r)) / profile.duration_s
        )
        reasons = []
        if generator_cpu >= CPU_SATURATION or cpu_warning:
            reasons.append(f"the load generator used {generator_cpu:.0%} of a core")
        lag_p99 = float(np.percentile(lag, 99)) if lag.size else 0.0
        if lag_p99 > LAG_SATURATION_MS:
            reasons.append(f"requests left {lag_p99:.0f} ms late (p99) against the schedule")
        if sends and sent_rate < MIN_RATE_FRACTION * profile.rate:
            reasons.append(f"sent {sent_rate:.1f} req/s of the {profile.rate:.1f} targeted")
        result = TrackResult(
            track=track,
            endpoints=endpoints,
            target_rate=profile.rate,
            duration_s=profile.duration_s,
            warmup_s=profile.warmup_s,
            samples=len(mine),
            errors=errors,
            achieved_rate=achieved,
            latency_ms=percentiles(latency),
            generator_cpu=generator_cpu,
            generator_lag_p99_ms=lag_p99,
            saturated=bool(reasons),
            saturation_reasons=reasons,
            broken=broken,
        )
        save(out, result)
        results[track] = result
        log.info(
            "%s: %d samples, %.1f req/s, p99 %.1f ms, %d errors%s",
            track,
            len(mine),
            achieved,
            result.latency_ms.get("p99", float("nan")),
            errors,
            f" — SATURATED: {'; '.join(reasons)}" if reasons else "",
        )
    return results


__all__ = ["LoadTestRequest", "run_load_test", "sys"]
