"""Benchmark: how often the gate is right (issue #6), with fault injection on local servers.

Per case, a baseline server (the stable version) and a candidate server run side by
side; each trial is one smoke load test of both at once followed by the gate:

* +25 % latency: the candidate adds 25 % of the baseline's median latency (measured in
  a calibration run first) — detection rate, target ≥ 95 %;
* 1 % errors: the candidate fails 1 % of requests — detection rate, target ≥ 99 %;
* identical versions: no fault — false-alarm rate, target ≤ 5 %.

    .venv/bin/python benchmarks/gate_accuracy.py --trials 20 --duration 50
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


def trial(baseline: str, candidate: str, out: Path, duration: float) -> str:
    spec = load_model_spec(MODELS_DIR / "digits" / "model.yaml")
    profile = spec.load_profiles["smoke"].model_copy(update={"duration_s": duration})
    run_load_test(
        LoadTestRequest(
            tracks={"canary": [candidate], "baseline": [baseline]},
            model="digits",
            payload=spec.sample_request,
            profile=profile,
            out=out,
        )
    )
    rules = load_rules(MODELS_DIR / "digits" / "model.yaml")
    return decide(out / "canary", rules, out / "baseline").outcome


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--duration", type=float, default=50, help="measured seconds (≤ 60)")
    parser.add_argument(
        "--out", type=Path, default=REPO_ROOT / "benchmarks/results/gate_accuracy.json"
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
            median = float(
                sorted(latencies(work / "calibration" / "baseline"))[
                    len(latencies(work / "calibration" / "baseline")) // 2
                ]
            )
        cases = {
            "+25% latency": (f"latency_ms={0.25 * median:.3f}", True),
            "1% errors": ("error_ratio=0.01", True),
            "identical versions": ("", False),
        }
        rows = []
        for name, (faults, should_fail) in cases.items():
            outcomes = []
            with server(model) as base_url, server(model, faults) as cand_url:
                for i in range(args.trials):
                    outcomes.append(trial(base_url, cand_url, work / f"{name}-{i}", args.duration))
                    print(f"{name} trial {i}: {outcomes[-1]}", file=sys.stderr)
            fails = sum(1 for o in outcomes if o == FAIL)
            rows.append(
                {
                    "case": name,
                    "faults": faults,
                    "trials": len(outcomes),
                    "fail": fails,
                    "outcomes": outcomes,
                    "rate": fails / len(outcomes),
                    "should_fail": should_fail,
                }
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"baseline_median_ms": median, "rows": rows}, indent=2))
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
