"""Benchmark: how often the gate is right (issues #6 and 16), with fault injection on
local servers.

Each trial starts a fresh baseline server (the stable version) and a fresh candidate
server side by side (same age, same warm-up: Kayenta's fresh baseline), runs one smoke
load test of both at once, and judges it twice on the same samples:

* ``new``: the gate as shipped — latency on paired time blocks (scripts/gate/blocks.py),
  and a borderline latency-only failure confirmed by a second run on new server
  processes started in the other order (scripts/gate/confirm.py);
* ``old``: the method before issue 16 — a per-request Mann–Whitney U test plus the same
  effect-size tolerance, no confirmation (reimplemented here, for the comparison).

Cases:

* +25 % latency: the candidate adds 25 % of the baseline's median latency (measured in
  a calibration run first) — detection rate, target ≥ 95 %;
* 1 % errors: the candidate fails 1 % of requests — detection rate, target ≥ 99 %;
* identical versions: no fault — false-alarm rate, target 0 in ≥ 60 and an estimated
  rate ≤ 1 % from the fitted A/A ratio distribution (normal on the log ratio).

The A/A ratios' histogram is written beside the JSON (``--out`` with ``.png``).

    .venv/bin/python benchmarks/gate_accuracy.py --trials 20 --aa-trials 60
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
from scripts.gate.confirm import combine, is_borderline  # noqa: E402
from scripts.gate.verdict import FAIL, GateRules, decide, load_rules  # noqa: E402
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


def old_latency_fails(out: Path, rules: GateRules) -> tuple[bool, float]:
    """The per-request method before issue 16: Mann–Whitney + the same tolerance."""
    from scipy.stats import mannwhitneyu

    canary, base = latencies(out / "canary"), latencies(out / "baseline")
    b = rules.baseline
    p_value = float(mannwhitneyu(canary, base, alternative="greater").pvalue)
    cp = float(np.percentile(canary, b.latency_percentile))
    bp = float(np.percentile(base, b.latency_percentile))
    ratio = cp / bp
    worse = ratio > b.latency_tolerance and cp - bp > b.latency_min_delta_ms
    return p_value < 1 - b.confidence and worse, ratio


def load_test(baseline: str, candidate: str, out: Path, duration: float | None) -> float:
    """One smoke load test of both servers at once; returns its wall time."""
    spec = load_model_spec(MODELS_DIR / "digits" / "model.yaml")
    profile = spec.load_profiles["smoke"]
    if duration is not None:
        profile = profile.model_copy(update={"duration_s": duration})
    started = time.monotonic()
    run_load_test(
        LoadTestRequest(
            tracks={"canary": [candidate], "baseline": [baseline]},
            model="digits",
            payload=spec.sample_request,
            profile=profile,
            out=out,
        )
    )
    return time.monotonic() - started


@contextmanager
def pair(model: Path, faults: str, *, candidate_first: bool) -> Iterator[tuple[str, str]]:
    """(baseline URL, candidate URL) of two fresh servers, started in the given order."""
    if candidate_first:
        with server(model, faults) as cand_url, server(model) as base_url:
            yield base_url, cand_url
    else:
        with server(model) as base_url, server(model, faults) as cand_url:
            yield base_url, cand_url


def trial(
    model: Path, faults: str, out: Path, duration: float | None, *, candidate_first: bool = False
) -> dict[str, Any]:
    """Fresh servers, one load test, both methods; a borderline failure (new method)
    runs again on new servers started in the other order."""
    rules = load_rules(MODELS_DIR / "digits" / "model.yaml")
    with pair(model, faults, candidate_first=candidate_first) as (base_url, cand_url):
        seconds = [load_test(base_url, cand_url, out, duration)]
    verdict = decide(out / "canary", rules, out / "baseline")
    old_fail, old_ratio = old_latency_fails(out, rules)
    old_errors = next(
        (r.verdict == FAIL for r in verdict.rows if r.metric == "errors_vs_baseline"), False
    )
    slo_fail = any(
        r.verdict == FAIL and r.deciding and not r.metric.endswith("_vs_baseline")
        for r in verdict.rows
    )
    confirmed = False
    if is_borderline(verdict, rules):
        confirmed = True
        again = out / "confirmation"
        with pair(model, faults, candidate_first=not candidate_first) as (base_url, cand_url):
            seconds.append(load_test(base_url, cand_url, again, duration))
        verdict = combine(verdict, decide(again / "canary", rules, again / "baseline"))
    rows = {r.metric: r for r in verdict.rows}
    latency = rows.get("latency_vs_baseline")
    first = verdict.first_run or {}
    first_ratio = next(
        (r["value"] for r in first.get("rows", []) if r["metric"] == "latency_vs_baseline"),
        latency.value if latency else None,
    )
    return {
        "baseline_p50_ms": float(np.median(latencies(out / "baseline"))),
        "outcome": verdict.outcome,
        "old_outcome": FAIL if (old_fail or old_errors or slo_fail) else "pass",
        "ratio": first_ratio,  # the first run's block ratio (the A/A distribution)
        "old_ratio": old_ratio,
        "confirmed": confirmed,
        "load_s": seconds,
        "failing": [m for m, r in rows.items() if r.verdict == FAIL],
        "reasons": verdict.reasons,
    }


def aa_estimate(ratios: list[float], tolerance: float, margin: float) -> dict[str, float]:
    """A normal fit of the A/A log ratios: the estimated false-alarm rates.

    ``p_above_tolerance``: one run's ratio above the tolerance (the old method's rate,
    before its p-value, which noise always passes). ``p_false_alarm``: the new method's —
    a first ratio above tolerance + margin fails at once; one between the two fails only
    when an independent second run is above the tolerance too (the Wilcoxon test, which
    only lowers it, is left out: a conservative estimate)."""
    from scipy.stats import norm

    logs = np.log(np.array([r for r in ratios if r and r > 0]))
    mu, sigma = float(logs.mean()), float(logs.std(ddof=1))
    above = float(norm.sf(np.log(tolerance), mu, sigma))
    clear = float(norm.sf(np.log(tolerance + margin), mu, sigma))
    return {
        "mu": mu,
        "sigma": sigma,
        "p_above_tolerance": above,
        "p_false_alarm": clear + (above - clear) * above,
        "three_sigma_tolerance": float(np.exp(mu + 3 * sigma)),
    }


def calibrated_view(aa: list[float], latency: list[float], first: int = 10) -> dict[str, Any]:
    """What `gate calibrate` would set from the first ``first`` A/A runs, and how the
    other runs' first ratios fall against it (ratio alone: before Wilcoxon/confirmation)."""
    from scripts.gate.calibration import fit

    tolerance = fit(aa[:first])[3]
    rest = aa[first:]
    return {
        "from_trials": first,
        "tolerance": tolerance,
        "aa_above": sum(1 for r in rest if r > tolerance),
        "aa_judged": len(rest),
        "latency_above": sum(1 for r in latency if r > tolerance),
        "latency_judged": len(latency),
    }


def histogram(ratios: list[float], old: list[float], tolerance: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    bins = [float(b) for b in np.linspace(0.8, 1.3, 26)]
    ax.hist(old, bins=bins, alpha=0.5, label="old: whole-run p50 ratio")
    ax.hist(ratios, bins=bins, alpha=0.6, label="new: median of per-block ratios")
    ax.axvline(tolerance, color="red", linestyle="--", label=f"tolerance ×{tolerance:g}")
    ax.set_xlabel("canary / baseline p50, identical versions (A/A)")
    ax.set_ylabel("trials")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20, help="per regression case")
    parser.add_argument("--aa-trials", type=int, default=60, help="identical versions")
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
        "--order",
        choices=("candidate-first", "baseline-first"),
        default="baseline-first",
        help="which server of a trial starts first (as the local target: the baseline "
        "first, and its confirmation run the canary first; docs/benchmarks.md)",
    )
    parser.add_argument(
        "--latency-ms",
        type=float,
        default=None,
        help="the +25%% case's added latency (default: 25%% of a calibration run's median; "
        "pass 0.25 × the identical trials' median baseline p50 to match what trials measure)",
    )
    parser.add_argument(
        "--cases",
        default="latency,errors,identical",
        help="comma-separated subset of: latency, errors, identical",
    )
    args = parser.parse_args()
    rules = load_rules(MODELS_DIR / "digits" / "model.yaml")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        subprocess.run(
            [PY, str(MODELS_DIR / "digits/export.py"), "--out", str(work)],
            check=True,
            capture_output=True,
        )
        model = work / "digits"
        median = float("nan")
        if args.latency_ms is None and "latency" in args.cases.split(","):
            # The +25 % is of the baseline's median: twin servers loaded as a trial loads
            # them, twice, the median of both tracks in the second run. (On 2026-12-01
            # this read 5.05 ms where the trials measured 3.78 ms: prefer --latency-ms
            # from the identical trials' median baseline p50.)
            with server(model) as base_url, server(model) as twin_url:
                for _ in range(2):
                    load_test(base_url, twin_url, work / "calibration", args.duration)
                median = float(
                    np.median(
                        np.concatenate(
                            [latencies(work / "calibration" / t) for t in ("baseline", "canary")]
                        )
                    )
                )
        added = args.latency_ms if args.latency_ms is not None else 0.25 * median
        every = {
            "latency": ("+25% latency", f"latency_ms={added:.3f}", True, args.trials),
            "errors": ("1% errors", "error_ratio=0.01", True, args.trials),
            "identical": ("identical versions", "", False, args.aa_trials),
        }
        cases = {every[c][0]: every[c][1:] for c in args.cases.split(",") if c in every}
        rows = []
        for name, (faults, should_fail, count) in cases.items():
            trials = []
            for i in range(count):
                trials.append(
                    trial(
                        model,
                        faults,
                        work / f"{name}-{i}",
                        args.duration,
                        candidate_first=args.order == "candidate-first",
                    )
                )
                print(f"{name} trial {i}: {json.dumps(trials[-1])}", file=sys.stderr)
            new = sum(1 for t in trials if t["outcome"] == FAIL)
            old = sum(1 for t in trials if t["old_outcome"] == FAIL)
            row: dict[str, Any] = {
                "case": name,
                "faults": faults,
                "trials": len(trials),
                "fail": new,
                "old_fail": old,
                "confirmations": sum(1 for t in trials if t["confirmed"]),
                "load_s_max": max(s for t in trials for s in t["load_s"]),
                "outcomes": [t["outcome"] for t in trials],
                "should_fail": should_fail,
                "per_trial": trials,
            }
            if not should_fail:
                ratios = [t["ratio"] for t in trials if t["ratio"]]
                b = rules.baseline
                row["aa_new"] = aa_estimate(ratios, b.latency_tolerance, b.confirm_margin)
                row["aa_old"] = aa_estimate(
                    [t["old_ratio"] for t in trials], b.latency_tolerance, b.confirm_margin
                )
                histogram(
                    ratios,
                    [t["old_ratio"] for t in trials],
                    rules.baseline.latency_tolerance,
                    args.out.with_suffix(".png"),
                )
            rows.append(row)
            # Written after every case: a two-hour run stopped early keeps what it measured.
            meta = {
                "date": time.strftime("%Y-%m-%d"),
                "command": " ".join(sys.argv),
                "duration_s": args.duration or "smoke profile",
                "order": args.order,
            }
            document = {**meta, "baseline_median_ms": median, "rows": rows}
            ratios_of = {r["case"]: [t["ratio"] for t in r["per_trial"]] for r in rows}
            aa_ratios = [r for r in ratios_of.get("identical versions", []) if r]
            if len(aa_ratios) > 10 and "+25% latency" in ratios_of:
                latency = [r for r in ratios_of["+25% latency"] if r]
                document["calibrated_from_10"] = calibrated_view(aa_ratios, latency)
            args.out.write_text(json.dumps(document, indent=2))
    print(f"baseline median latency: {median:.2f} ms")
    print("| case | measured | new method | old method | confirmations | target |")
    print("|---|---|---|---|---|---|")
    targets = {"+25% latency": "≥ 95%", "1% errors": "≥ 99%", "identical versions": "0"}
    for r in rows:
        label = "detection rate" if r["should_fail"] else "false alarms"
        print(
            f"| {r['case']} | {label} | {r['fail']}/{r['trials']} | {r['old_fail']}/"
            f"{r['trials']} | {r['confirmations']} | {targets[r['case']]} |"
        )
        if "aa_new" in r:
            print(f"A/A fit (new): {r['aa_new']}\nA/A fit (old): {r['aa_old']}")
    if "calibrated_from_10" in document:
        print(f"calibrated from the first 10 A/A runs: {document['calibrated_from_10']}")


if __name__ == "__main__":
    main()
