"""Run Locust headless as a subprocess and turn its output into per-track results.

The generator is watched while it runs: its own CPU (sampled from /proc), and how
late it sent requests against the open-loop schedule. A run whose generator was
saturated measured the generator, not the server; it is marked so, and the gate
can never pass it.
"""

from __future__ import annotations

import csv
import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from scripts.errors import ConfigError, ToolMissingError
from scripts.loadtest.locust_process import (
    LOCUSTFILES,
    Traffic,
    locust_command,
    locust_env,
    run_locust,
)
from scripts.loadtest.reachability import check_reachable
from scripts.loadtest.results import SAMPLES_FILE, TrackResult, percentiles, save
from scripts.log import log
from scripts.model_spec import LoadProfile
from scripts.process import find_program

CPU_SATURATION = 0.90  # Locust's own warning threshold
LAG_SATURATION_MS = 100.0  # p99 of how late requests left against their schedule
MIN_RATE_FRACTION = 0.9  # the generator must send at least this share of the target


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


def run_load_test(request: LoadTestRequest) -> dict[str, TrackResult]:
    """Run one Locust test over all tracks at once; return each track's result."""
    locust = find_program("locust", hint="run `make setup` (locust is a requirement)")
    if not request.tracks or not all(request.tracks.values()):
        raise ConfigError("the load test has no endpoints", fix="pass --endpoint URL")
    _check_endpoints(request)
    check_reachable(request.tracks, request.model, request.protocol)
    profile = request.profile
    request.out.mkdir(parents=True, exist_ok=True)
    raw = request.out / "raw"
    raw.mkdir(exist_ok=True)
    with tempfile.NamedTemporaryFile("wb", suffix=".payload", delete=False, dir=raw) as fh:
        fh.write(_payload_bytes(request))
        payload_path = Path(fh.name)
    traffic = traffic_of(request)
    command = locust_command([locust], traffic, request.out, raw, processes=request.processes)
    log.info(
        "load test (%s): %d users, %.1f req/s per track, %.0f s (+%.0f s warm-up) on %s",
        request.protocol,
        profile.users,
        profile.rate,
        profile.duration_s,
        profile.warmup_s,
        ", ".join(f"{t}={len(u)} endpoint(s)" for t, u in request.tracks.items()),
    )
    wall_start = time.time()
    try:
        locust_run = run_locust(
            command,
            locust_env(traffic, payload_path, raw),
            raw / "locust.log",
            settle_s=profile.warmup_s + 1,
            processes=request.processes,
        )
    except OSError as exc:
        raise ToolMissingError(f"cannot start locust: {exc}") from exc
    return analyse(
        request,
        raw,
        wall_start,
        locust_run.cpu,
        locust_run.broken(),
        cpu_warning="CPU usage above" in locust_run.log,
    )


def traffic_of(request: LoadTestRequest) -> Traffic:
    profile = request.profile
    return Traffic(
        tracks=request.tracks,
        model=request.model,
        protocol=request.protocol,
        users=profile.users,
        rate=profile.rate,
        duration_s=profile.duration_s,
        warmup_s=profile.warmup_s,
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


def analyse(
    request: LoadTestRequest,
    raw: Path,
    wall_start: float,
    generator_cpu: float,
    broken: str,
    *,
    cpu_warning: bool,
    saturation: list[str] | None = None,
) -> dict[str, TrackResult]:
    """The per-track results from the raw sample files of one run (local or in-cluster).

    ``saturation`` adds reasons found elsewhere (an in-cluster generator's own checks)."""
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
        reasons = list(saturation or [])
        if generator_cpu >= CPU_SATURATION or cpu_warning:
            reasons.append(
                f"the load generator used {generator_cpu:.0%} of its CPU (a core per process, "
                "or its CPU limit when lower)"
            )
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


__all__ = ["LoadTestRequest", "analyse", "run_load_test", "traffic_of"]
