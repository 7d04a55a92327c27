"""Benchmark: how often the gate is right (issue #6), with fault injection on local servers.

Per case, a baseline server (the stable version) and a candidate server run side by
side; each trial is one smoke load test of both at once followed by the gate:

* +25 % latency: the candidate adds 25 % of the baseline's median latency (measured in
  a calibration run first) — detection rate, target ≥ 95 %;
* 1 % errors: the candidate fails 1 % of requests — detection rate, target ≥ 99 %;
* identical versions: no fault — false-alarm rate, target ≤ 5 %.

    .venv/bin/python benchmarks/gate_accuracy.py --trials 20
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from scripts.config import MODELS_DIR  # noqa: E402
from scripts.gate.verdict import FAIL, decide, load_rules  # noqa: E402
from scripts.loadtest.results import latencies  # noqa: E402
from scripts.loadtest.runner import LoadTestRequest, run_load_test  # noqa: E402
from scripts.model_spec import load_model_spec  # noqa: E402

PY = sys.executable


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def server(model_dir: Path, faults: str = "") -> Iterator[str]:
    port = free_port()
    args = [
        PY,
        "-m",
        "scripts",
        "serve",
        "--port=0",
        f"--rest_api_port={port}",
        "--bind_address=127.0.0.1",
        "--model_name=digits",
        f"--model_base_path={model_dir}",
        "--tensorflow_intra_op_parallelism=1",
        "--tensorflow_inter_op_parallelism=1",
    ]
    if faults:
        args.append(f"--unsafe_fault_injection={faults}")
    proc = subprocess.Popen(
        args,
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                urllib.request.urlopen(f"{url}/v1/models/digits", timeout=1)  # noqa: S310
                break
            except OSError:
                time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def trial(baseline: str, candidate: str, out: Path, duration: float | None) -> dict[str, Any]:
    """One smoke load test of both servers at once, then the gate: its figures."""
    spec = load_model_spec(MODELS_DIR / "digits" / "model.yaml")
    profile = spec.load_profiles["smoke"]
    if duration is not None:
        profile = profile.model_copy(update={"duration_s": duration})
    results = run_load_test(
        LoadTestRequest(
            tracks={"canary": [candidate], "baseline": [baseline]},
            model="digits",
            payload=spec.sample_request,
            profile=profile,
            out=out,
        )
    )
    rules = load_rules(MODELS_DIR / "digits" / "model.yaml")
    verdict = decide(out / "canary", rules, out / "baseline")
    rows = {r.metric: r for r in verdict.rows}
    figures: dict[str, Any] = {
        "outcome": verdict.outcome,
        "samples": {t: r.samples for t, r in results.items()},
        "p50_ms": {t: r.latency_ms.get("p50") for t, r in results.items()},
        "generator_cpu": max(r.generator_cpu for r in results.values()),
        "failing": [m for m, r in rows.items() if r.verdict == FAIL],
    }
    for metric in ("latency_vs_baseline", "errors_vs_baseline"):
        if metric in rows:
            figures[metric] = {"value": rows[metric].value, "reason": rows[metric].reason}
    if verdict.outcome not in (FAIL, "pass"):
        figures["reasons"] = verdict.reasons
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument(
        "--duration",
        type=float,
        default=None,
        help="measured seconds (≤ 60); default: the digits smoke profile's",
    )
    parser.add_argument(
        "--out", type=Path, default=REPO_ROOT / "benchmarks/results/gate_accuracy.json"
    )
    parser.add_argument(
        "--cases",
        default="latency,errors,identical",
        help="comma-separated subset of: latency, errors, identical",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        subprocess.run(
            [PY, str(MODELS_DIR / "digits/export.py"), "--out", str(work)],
            check=True,
            capture_output=True,
        )
        model = work / "digits"
        with server(model) as base_url, server(model) as twin_url:
            trial(base_url, twin_url, work / "calibration", 20)
            median = float(np.median(latencies(work / "calibration" / "baseline")))
        every = {
            "latency": ("+25% latency", f"latency_ms={0.25 * median:.3f}", True),
            "errors": ("1% errors", "error_ratio=0.01", True),
            "identical": ("identical versions", "", False),
        }
        cases = {every[c][0]: every[c][1:] for c in args.cases.split(",") if c in every}
        rows = []
        for name, (faults, should_fail) in cases.items():
            trials = []
            with server(model) as base_url, server(model, faults) as cand_url:
                for i in range(args.trials):
                    trials.append(trial(base_url, cand_url, work / f"{name}-{i}", args.duration))
                    print(f"{name} trial {i}: {json.dumps(trials[-1])}", file=sys.stderr)
            outcomes = [t["outcome"] for t in trials]
            fails = sum(1 for o in outcomes if o == FAIL)
            rows.append(
                {
                    "case": name,
                    "faults": faults,
                    "trials": len(outcomes),
                    "fail": fails,
                    "outcomes": outcomes,
                    "rate": fails / len(outcomes),
                    "per_trial": trials,
                    "should_fail": should_fail,
                }
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "date": time.strftime("%Y-%m-%d"),
        "command": " ".join(sys.argv),
        "duration_s": args.duration or "smoke profile",
    }
    args.out.write_text(json.dumps({**meta, "baseline_median_ms": median, "rows": rows}, indent=2))
    print(f"baseline median latency: {median:.2f} ms")
    print("| case | measured | rate | target |\n|---|---|---|---|")
    targets = {"+25% latency": "≥ 95%", "1% errors": "≥ 99%", "identical versions": "≤ 5%"}
    for r in rows:
        label = "detection rate" if r["should_fail"] else "false-alarm rate"
        print(
            f"| {r['case']} | {label} | {r['rate']:.0%} ({r['fail']}/{r['trials']}) | "
            f"{targets[r['case']]} |"
        )


if __name__ == "__main__":
    main()
