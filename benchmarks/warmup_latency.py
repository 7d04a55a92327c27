"""Benchmark: the first request after a deploy, with and without warm-up records.

For each model, the SavedModel is exported once and packaged by ``package`` (the
library, as ``python -m scripts package`` does) in each variant: no warm-up records
(the baseline, ``--no-warmup``) and N records of the model's ``sample_request`` (the
model.yaml default and the other counts asked for). Each trial starts
``python -m scripts serve`` on one unpacked variant (127.0.0.1, REST only), waits
for ``GET /v1/models/NAME`` to report AVAILABLE (what the Deployment's readiness probe
asks), then times:

* the first ``:predict`` of ``sample_request`` sent right after readiness (a fresh
  connection, as the first client after a rollout opens one);
* the median of the next ``--steady`` requests on a keep-alive connection (steady state,
  for reference);
* the time from spawning the process to AVAILABLE (what the warm-up adds to a rollout),
  and the warm-up's own wall time from the server's log.

Variants are interleaved trial by trial (the 2-core machine is shared and noisy) and
summarised by medians. ResNet50 (random weights, JPEG input) runs too unless
``--only digits``.

    .venv/bin/python benchmarks/warmup_latency.py [--trials 5] [--records 1,10] [--only digits]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
PY = sys.executable
READY_TIMEOUT_S = 240
_ELAPSED = re.compile(
    r"Number of warmup records read: (\d+)\. Elapsed time \(microseconds\): (\d+)"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def export(model: str, work: Path) -> Path:
    """models/MODEL/export.py → the version directory it wrote."""
    out = subprocess.run(
        [PY, str(REPO_ROOT / "models" / model / "export.py"), "--out", str(work / "export")],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    return Path(json.loads(out.stdout.strip().splitlines()[-1])["path"])


def variant_base(model: str, version_dir: Path, records: int, work: Path) -> Path:
    """Package ``version_dir`` with ``records`` warm-up records (0: none) and unpack it:
    the model base path a deploy would serve."""
    from scripts.model_spec import model_spec_for
    from scripts.package import package
    from scripts.warmup import WarmupPlan

    spec = model_spec_for(model)
    plan = WarmupPlan(spec.sample_request, records, "baseline: no warm-up records")
    out = work / f"release-{records}"
    result = package(version_dir, model, 1, out, warmup=plan)
    assert result.warmup.records == records, result.warmup
    root = work / f"served-{records}"
    with tarfile.open(result.path) as tar:
        tar.extractall(root, filter="data")
    return root / model


def _post(conn: http.client.HTTPConnection, path: str, body: bytes) -> float:
    started = time.perf_counter()
    conn.request("POST", path, body, {"Content-Type": "application/json"})
    response = conn.getresponse()
    payload = response.read()
    elapsed = time.perf_counter() - started
    if response.status != 200:
        raise RuntimeError(f"predict answered {response.status}: {payload[:300]!r}")
    return elapsed * 1000


def _available(port: int, model: str) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", f"/v1/models/{model}")
        response = conn.getresponse()
        body = response.read()
    except OSError:
        return False
    finally:
        conn.close()
    if response.status != 200:
        return False
    states = json.loads(body).get("model_version_status", [])
    return any(s.get("state") == "AVAILABLE" for s in states)


def trial(model: str, base: Path, body: bytes, steady: int, log_path: Path) -> dict[str, Any]:
    """One server start: readiness, the first request, then the steady-state median."""
    port = free_port()
    cmd = [
        PY,
        "-m",
        "scripts",
        "serve",
        "--port=0",
        f"--rest_api_port={port}",
        "--bind_address=127.0.0.1",
        f"--model_name={model}",
        f"--model_base_path={base}",
    ]
    with log_path.open("wb") as log:
        started = time.perf_counter()
        proc = subprocess.Popen(
            cmd,
            cwd=REPO_ROOT,
            stdout=log,
            stderr=log,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        )
        try:
            deadline = started + READY_TIMEOUT_S
            while not _available(port, model):
                if proc.poll() is not None:
                    raise RuntimeError(f"server exited with {proc.returncode}: see {log_path}")
                if time.perf_counter() > deadline:
                    raise RuntimeError(f"server not ready after {READY_TIMEOUT_S} s")
                time.sleep(0.02)
            ready_s = time.perf_counter() - started
            path = f"/v1/models/{model}:predict"
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            first_ms = _post(conn, path, body)
            later = [_post(conn, path, body) for _ in range(steady)]
            conn.close()
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    match = _ELAPSED.search(log_path.read_text(errors="replace"))
    return {
        "ready_s": ready_s,
        "first_ms": first_ms,
        "second_ms": later[0] if later else None,
        "steady_median_ms": statistics.median(later) if later else None,
        "warmup_records_read": int(match[1]) if match else 0,
        "warmup_ms": int(match[2]) / 1000 if match else 0.0,
    }


def run_model(
    model: str, records: list[int], trials: int, steady: int, work: Path
) -> dict[str, Any]:
    from scripts.model_spec import model_spec_for

    version_dir = export(model, work)
    body = json.dumps(model_spec_for(model).sample_request).encode()
    variants = [0, *records]
    bases = {n: variant_base(model, version_dir, n, work) for n in variants}
    results: dict[int, list[dict[str, Any]]] = {n: [] for n in variants}
    for t in range(trials):
        # Interleaved, and the order rotated each trial: no variant always goes first.
        order = variants[t % len(variants) :] + variants[: t % len(variants)]
        for n in order:
            row = trial(model, bases[n], body, steady, work / f"serve-{model}-{n}-{t}.log")
            results[n].append(row)
            print(
                f"{model} records={n} trial {t + 1}: ready {row['ready_s']:.2f} s, first "
                f"{row['first_ms']:.1f} ms, steady {row['steady_median_ms']:.2f} ms, "
                f"warm-up {row['warmup_ms']:.0f} ms",
                file=sys.stderr,
            )

    def med(n: int, key: str) -> float:
        return float(statistics.median(r[key] for r in results[n]))

    summary = []
    for n in variants:
        summary.append(
            {
                "records": n,
                "first_ms": med(n, "first_ms"),
                "second_ms": med(n, "second_ms"),
                "steady_median_ms": med(n, "steady_median_ms"),
                "first_over_steady": med(n, "first_ms") / med(n, "steady_median_ms"),
                "first_vs_no_warmup": med(n, "first_ms") / med(0, "first_ms"),
                "ready_s": med(n, "ready_s"),
                "ready_delta_s": med(n, "ready_s") - med(0, "ready_s"),
                "warmup_ms": med(n, "warmup_ms"),
                "first_ms_range": [
                    min(r["first_ms"] for r in results[n]),
                    max(r["first_ms"] for r in results[n]),
                ],
            }
        )
    return {
        "model": model,
        "trials": trials,
        "steady_requests": steady,
        "summary": summary,
        "per_trial": {str(n): rows for n, rows in results.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=5, help="server starts per variant")
    parser.add_argument(
        "--records", default="1,10", help="warm-up record counts to compare with none"
    )
    parser.add_argument("--steady", type=int, default=50, help="requests after the first")
    parser.add_argument("--only", choices=["digits", "resnet50"], help="one model only")
    parser.add_argument(
        "--out", type=Path, default=REPO_ROOT / "benchmarks/results/warmup_latency.json"
    )
    args = parser.parse_args()
    records = [int(n) for n in args.records.split(",") if n.strip()]
    models = [args.only] if args.only else ["digits", "resnet50"]
    report = {
        "date": time.strftime("%Y-%m-%d"),
        "cpus": os.cpu_count(),
        "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "models": [],
    }
    with tempfile.TemporaryDirectory(prefix="warmup-bench-") as tmp:
        for model in models:
            work = Path(tmp) / model
            work.mkdir()
            report["models"].append(run_model(model, records, args.trials, args.steady, work))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(
        "| model | warm-up records | first request (ms) | 2nd (ms) | steady median (ms) | "
        "first / steady | first vs none | ready after start (s) | warm-up (ms) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for m in report["models"]:
        for s in m["summary"]:
            print(
                f"| {m['model']} | {s['records'] or 'none'} | {s['first_ms']:.1f} "
                f"({s['first_ms_range'][0]:.1f}–{s['first_ms_range'][1]:.1f}) | "
                f"{s['second_ms']:.2f} | {s['steady_median_ms']:.2f} | "
                f"{s['first_over_steady']:.1f}× | {s['first_vs_no_warmup']:.2f}× | "
                f"{s['ready_s']:.2f} ({s['ready_delta_s']:+.2f}) | {s['warmup_ms']:.0f} |"
            )


if __name__ == "__main__":
    main()
