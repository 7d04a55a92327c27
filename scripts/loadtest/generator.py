"""The in-cluster load generator: what runs in the generator Job's pods.

``python -m scripts.loadtest.generator --workdir /tmp/loadgen`` with the plan in
``$TFRP_PLAN`` (JSON, :class:`GeneratorPlan`) and the pod's completion index in
``$JOB_COMPLETION_INDEX`` (an Indexed Job sets it). One Job spec serves every size:

* no workers: the single pod runs Locust standalone;
* ``workers: N``: index 0 is the Locust master (``--expect-workers N``), indexes 1..N
  are workers that connect to it through the run's Service.

Every pod that sends requests keeps its raw per-request samples (raw samples merge
exactly; percentiles do not) and writes them, with Locust's JSON and its own
measurements (CPU against the container's limit, Locust's CPU warning), to its log as
a checked frame (:mod:`scripts.loadtest.frames`), or to ``gs://`` when the frame would
not fit the log. The runner (:mod:`scripts.loadtest.in_cluster`) reads them back.

Exit codes: 0 results written (the gate judges them, failed requests included); 2 the
plan is unusable; 3 the results do not fit the log and no ``gs://`` place was given;
4 the workers never all connected; 5 Locust could not run; 6 an endpoint does not answer.

Imports only the standard library, Locust (as a subprocess), ``zstandard`` and what
the request body needs (``requests``; protobuf and TensorFlow's message definitions
for gRPC): the generator image carries exactly these (requirements-loadgen.txt).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from scripts.errors import PipelineError
from scripts.loadtest import frames
from scripts.loadtest.locust_process import (
    MASTER_PORT,
    Traffic,
    cgroup_cpu_limit,
    locust_command,
    locust_env,
    run_locust,
)

PLAN_ENV = "TFRP_PLAN"
INDEX_ENV = "JOB_COMPLETION_INDEX"
EXIT_PLAN, EXIT_TOO_LARGE, EXIT_WORKERS, EXIT_LOCUST, EXIT_UNREACHABLE = 2, 3, 4, 5, 6
LOG_TAIL_BYTES = 64 * 1024


@dataclass(frozen=True)
class GeneratorPlan:
    """Everything a generator pod needs, carried in one environment variable."""

    traffic: Traffic
    payload: dict[str, Any] | None  # a REST body; None: made from the served signature
    signature_name: str = "serving_default"
    workers: int = 0
    master_host: str = ""
    master_port: int = MASTER_PORT
    workers_wait_s: float = 60.0
    log_budget: int = frames.DEFAULT_LOG_BUDGET
    results_uri: str | None = None  # gs://BUCKET/PREFIX for results too large for the log

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> GeneratorPlan:
        data = json.loads(text)
        data["traffic"] = Traffic(**data["traffic"])
        return cls(**data)

    def role(self, index: int) -> str:
        if self.workers == 0:
            return "standalone"
        return "master" if index == 0 else "worker"


def _emit(line: str) -> None:
    """One line on stdout, which is the pod's log: the channel back to the runner."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _say(marker: str, value: dict[str, Any]) -> None:
    _emit(f"{marker} {json.dumps(value, sort_keys=True)}")


def _fail(code: int, reason: str, **extra: Any) -> int:
    _say(frames.ERROR, {"reason": reason, "exit_code": code, **extra})
    return code


def _payload(plan: GeneratorPlan, out: Path) -> Path:
    from scripts.loadtest.payload import payload_bytes

    traffic = plan.traffic
    first = traffic.tracks.get("canary") or next(iter(traffic.tracks.values()))
    raw, body = payload_bytes(
        plan.payload,
        protocol=traffic.protocol,
        endpoint=first[0],
        model=traffic.model,
        signature_name=plan.signature_name,
    )
    (out / "request.json").write_text(json.dumps(body, indent=1))
    path = out / "request.payload"
    path.write_bytes(raw)
    return path


def _collect(out: Path, raw: Path, index: int, meta: dict[str, Any]) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    for path in sorted(raw.glob("samples-*.csv")) + sorted(raw.glob("sent-*.csv")):
        kind, _, pid = path.stem.partition("-")
        files[f"{kind}-{index}-{pid}.csv"] = path.read_bytes()
    for name in ("locust.json", "locust.html", "request.json"):
        if (out / name).is_file():
            files[name] = (out / name).read_bytes()
    log_path = out / "locust.log"
    if log_path.is_file():
        files["locust.log"] = log_path.read_bytes()[-LOG_TAIL_BYTES:]
    files["generator.json"] = json.dumps(meta, indent=1, sort_keys=True).encode()
    return files


def _publish(plan: GeneratorPlan, files: dict[str, bytes], index: int, meta: dict[str, Any]) -> int:
    blob = frames.pack(files)
    if "locust.html" in files and frames.encoded_size(len(blob)) > plan.log_budget:
        files = {k: v for k, v in files.items() if k != "locust.html"}  # a report, not data
        blob = frames.pack(files)
    samples = frames.sample_rows(files)
    size = frames.encoded_size(len(blob))
    if size <= plan.log_budget:
        for line in frames.encode(blob, index=index, samples=samples, meta=meta):
            _emit(line)
        return 0
    if plan.results_uri:
        from scripts.loadtest.results_store import upload

        uri, digest = upload(plan.results_uri, index, blob)
        _say(
            frames.AT,
            {"uri": uri, "sha256": digest, "bytes": len(blob), "samples": samples,
             "index": index, "v": frames.VERSION, "meta": meta},
        )  # fmt: skip
        return 0
    _say(frames.TOO_LARGE, {"bytes": size, "budget": plan.log_budget, "samples": samples})
    return _fail(
        EXIT_TOO_LARGE,
        f"the results ({size:,} bytes encoded, {samples:,} samples) do not fit the pod log "
        f"budget ({plan.log_budget:,} bytes; the kubelet rotates logs at 10 MiB)",
    )


def run(plan: GeneratorPlan, index: int, workdir: Path, master: tuple[str, int]) -> int:
    role = plan.role(index)
    out = workdir / f"generator-{index}"
    shutil.rmtree(out, ignore_errors=True)
    raw = out / "raw"
    raw.mkdir(parents=True)
    traffic = plan.traffic
    locust = [sys.executable, "-m", "locust"]  # the image has no console scripts
    payload = out / "none.payload"
    if role != "master":
        from scripts.loadtest.reachability import check_reachable

        try:
            check_reachable(traffic.tracks, traffic.model, traffic.protocol)
            payload = _payload(plan, out)
        except PipelineError as exc:
            return _fail(EXIT_UNREACHABLE, exc.what)
    else:
        payload.write_bytes(b"")
    command = locust_command(
        locust,
        traffic,
        out,
        raw,
        role=role,
        workers=plan.workers,
        master=master,
        workers_wait_s=plan.workers_wait_s,
    )
    cpu_limit = cgroup_cpu_limit() or _float(os.environ.get("TFRP_CPU_LIMIT"))
    wall_start = time.time()
    try:
        locust_run = run_locust(
            command,
            locust_env(traffic, payload, raw),
            out / "locust.log",
            settle_s=traffic.warmup_s + 1,
            cpu_limit=cpu_limit,
        )
    except OSError as exc:
        return _fail(EXIT_LOCUST, f"cannot start locust: {exc}")
    if role == "master" and "Gave up waiting for workers" in locust_run.log:
        return _fail(
            EXIT_WORKERS,
            f"not all {plan.workers} workers connected to the master within "
            f"{plan.workers_wait_s:.0f} s",
        )
    meta = {
        "index": index,
        "role": role,
        "cpu_peak": round(locust_run.cpu, 4),
        "cpu_limit": cpu_limit,
        "cpu_warning": "CPU usage above" in locust_run.log,
        "locust_exit": locust_run.returncode,
        "wall_start": wall_start,
        "broken": locust_run.broken(f"locust ({role})"),
        "host": os.environ.get("HOSTNAME", ""),
    }
    return _publish(plan, _collect(out, raw, index, meta), index, meta)


def _float(text: str | None) -> float | None:
    try:
        return float(text) / 1000 if text else None  # the Downward API's limits.cpu in m
    except ValueError:
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.loadtest.generator")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/loadgen"))  # noqa: S108
    parser.add_argument("--master-host", help="override the plan's (the local target's DNS)")
    parser.add_argument("--master-port", type=int)
    args = parser.parse_args(argv)
    try:
        plan = GeneratorPlan.from_json(os.environ[PLAN_ENV])
        index = int(os.environ.get(INDEX_ENV, "0"))
    except (KeyError, ValueError, TypeError) as exc:
        return _fail(EXIT_PLAN, f"no usable plan in ${PLAN_ENV}/${INDEX_ENV}: {exc!r}")
    master = (args.master_host or plan.master_host, args.master_port or plan.master_port)
    return run(plan, index, args.workdir, master)


if __name__ == "__main__":
    sys.exit(main())
