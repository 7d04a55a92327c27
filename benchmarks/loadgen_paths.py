"""Benchmark: the load test through the generator Job costs no accuracy (local target).

The same smoke load test (the digits model.yaml profile: 8 users, 40 req/s per track,
50 s after a 5 s warm-up) of a baseline and a candidate server running side by side,
once through each path:

* direct: ``run_load_test`` runs Locust as a subprocess of this process;
* job: the generator Job (kustomize/loadtest) on the local target — the same Job as
  local processes — with the results framed on the pod log and analysed by the same
  ``analyse``.

Cases as in gate_accuracy.py: identical versions, +25 % latency (25 % of a calibration
run's baseline median), 1 % errors. Per trial the two paths run back to back, in
alternating order (ABBA: direct first in even trials, job first in odd ones), so drift
on a noisy machine favours neither. Each run is judged by the gate with the model's
shipped rules. Checks: the gate's outcomes agree between paths in every trial; per case,
the Job path's p50 (median over trials) is within 10 % of the direct path's for both
tracks; achieved rates within 5 %.

    .venv/bin/python benchmarks/loadgen_paths.py --trials 4     # ~25 min on 2 cores
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from benchmarks.gate_accuracy import server  # noqa: E402
from scripts.config import MODELS_DIR  # noqa: E402
from scripts.deploy.local_target import LocalTarget  # noqa: E402
from scripts.errors import PipelineError  # noqa: E402
from scripts.gate.verdict import FAIL, decide, load_rules  # noqa: E402
from scripts.image.auth import CredentialStore  # noqa: E402
from scripts.loadtest.in_cluster import plan_job, run_in_cluster  # noqa: E402
from scripts.loadtest.job_spec import GeneratorOptions  # noqa: E402
from scripts.loadtest.results import TrackResult, latencies  # noqa: E402
from scripts.loadtest.runner import LoadTestRequest, run_load_test  # noqa: E402
from scripts.model_spec import LoadProfile, load_model_spec  # noqa: E402

PY = sys.executable
MODEL_YAML = MODELS_DIR / "digits" / "model.yaml"
PATHS = ("direct", "job")
TRACKS = ("canary", "baseline")
IMAGE = "x@sha256:" + "0" * 64  # the local Job runner runs this checkout; any digest does
P50_TOLERANCE = 0.10
RATE_TOLERANCE = 0.05


def profile_for(duration: float | None) -> LoadProfile:
    profile = load_model_spec(MODEL_YAML).load_profiles["smoke"]
    if duration is not None:
        profile = profile.model_copy(update={"duration_s": duration})
    return profile


def load_test(
    path: str, baseline: str, candidate: str, out: Path, *, profile: LoadProfile, state: Path
) -> dict[str, TrackResult]:
    """One load test of both servers at once through ``path``."""
    request = LoadTestRequest(
        tracks={"canary": [candidate], "baseline": [baseline]},
        model="digits",
        payload=load_model_spec(MODEL_YAML).sample_request,
        profile=profile,
        out=out,
    )
    if path == "direct":
        return run_load_test(request)
    job = plan_job(request, GeneratorOptions(), image=IMAGE, namespace="default", run_id="bench")
    target = LocalTarget(
        state,
        "default",
        model="digits",
        cache_dir=state / "cache",
        credentials=CredentialStore(None),
    )
    return run_in_cluster(request, target, job)


def run(
    path: str, baseline: str, candidate: str, out: Path, *, profile: LoadProfile, state: Path
) -> dict[str, Any]:
    """One load test through ``path``, then the gate: its figures."""
    started = time.monotonic()
    try:
        results = load_test(path, baseline, candidate, out, profile=profile, state=state)
    except PipelineError as exc:
        return {"path": path, "outcome": "error", "error": str(exc)}
    wall_s = time.monotonic() - started
    verdict = decide(out / "canary", load_rules(MODEL_YAML), out / "baseline")
    rows = {r.metric: r for r in verdict.rows}
    figures: dict[str, Any] = {
        "path": path,
        "outcome": verdict.outcome,
        "wall_s": round(wall_s, 1),
        "failing": [m for m, r in rows.items() if r.verdict == FAIL],
        "generator_cpu": max(r.generator_cpu for r in results.values()),
        "tracks": {
            t: {
                "achieved_rate": r.achieved_rate,
                "samples": r.samples,
                "errors": r.errors,
                "p50_ms": r.latency_ms.get("p50"),
                "p99_ms": r.latency_ms.get("p99"),
                "lag_p99_ms": r.generator_lag_p99_ms,
                "saturated": r.saturated,
            }
            for t, r in results.items()
        },
    }
    for metric in ("latency_vs_baseline", "errors_vs_baseline"):
        if metric in rows:
            figures[metric] = rows[metric].value
    if verdict.outcome not in (FAIL, "pass"):
        figures["reasons"] = verdict.reasons
    return figures


def median_of(trials: list[dict[str, dict[str, Any]]], path: str, track: str, key: str) -> float:
    values = [
        t[path]["tracks"][track][key] for t in trials if "tracks" in t[path]
    ]  # an errored run has no figures
    return float(np.median(values)) if values else float("nan")


def summarise(name: str, trials: list[dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """Per path and track: medians over trials; the checks of this case."""
    summary: dict[str, Any] = {"case": name, "paths": {}, "checks": {}}
    for path in PATHS:
        summary["paths"][path] = {
            "outcomes": [t[path]["outcome"] for t in trials],
            **{
                track: {
                    key: median_of(trials, path, track, key)
                    for key in ("achieved_rate", "p50_ms", "p99_ms")
                }
                for track in TRACKS
            },
        }
    checks = summary["checks"]
    checks["outcomes_agree"] = all(t["direct"]["outcome"] == t["job"]["outcome"] for t in trials)
    for track in TRACKS:
        for key, tolerance in (("p50_ms", P50_TOLERANCE), ("achieved_rate", RATE_TOLERANCE)):
            direct = summary["paths"]["direct"][track][key]
            job = summary["paths"]["job"][track][key]
            ratio = job / direct if direct else float("nan")
            checks[f"{track}_{key}"] = {
                "job_over_direct": ratio,
                "tolerance": tolerance,
                "met": bool(abs(ratio - 1) <= tolerance),
            }
    return summary


def fmt(value: float | None, digits: int = 2) -> str:
    return "—" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def print_tables(summaries: list[dict[str, Any]], cases: dict[str, list[Any]]) -> None:
    print(
        "| case | path | req/s canary / baseline | p50 canary / baseline (ms) "
        "| p99 canary / baseline (ms) | gate outcomes |\n|---|---|---|---|---|---|"
    )
    for s in summaries:
        for path in PATHS:
            p = s["paths"][path]
            print(
                f"| {s['case']} | {path} "
                f"| {fmt(p['canary']['achieved_rate'])} / {fmt(p['baseline']['achieved_rate'])} "
                f"| {fmt(p['canary']['p50_ms'])} / {fmt(p['baseline']['p50_ms'])} "
                f"| {fmt(p['canary']['p99_ms'])} / {fmt(p['baseline']['p99_ms'])} "
                f"| {', '.join(p['outcomes'])} |"
            )
    print("\nper trial (order, path: req/s c/b, p50 c/b, p99 c/b, outcome):")
    for name, trials in cases.items():
        for i, t in enumerate(trials):
            for path in t["order"]:
                r = t[path]
                if "tracks" not in r:
                    print(f"  {name} #{i} {path}: ERROR {r.get('error', '')[:200]}")
                    continue
                c, b = r["tracks"]["canary"], r["tracks"]["baseline"]
                print(
                    f"  {name} #{i} {path}: {c['achieved_rate']:.2f}/{b['achieved_rate']:.2f} "
                    f"req/s, p50 {fmt(c['p50_ms'])}/{fmt(b['p50_ms'])}, "
                    f"p99 {fmt(c['p99_ms'])}/{fmt(b['p99_ms'])} ms, {r['outcome']} "
                    f"{r['failing'] or ''} (wall {r['wall_s']} s, gen CPU "
                    f"{r['generator_cpu']:.0%})"
                )
    print("\nchecks (Job path / direct path, medians over trials):")
    for s in summaries:
        c = s["checks"]
        print(f"  {s['case']}: gate outcomes agree in every trial: {c['outcomes_agree']}")
        for track in TRACKS:
            for key in ("p50_ms", "achieved_rate"):
                check = c[f"{track}_{key}"]
                print(
                    f"  {s['case']}: {track} {key} job/direct = "
                    f"{fmt(check['job_over_direct'], 3)} (±{check['tolerance']:.0%}): "
                    f"{'met' if check['met'] else 'NOT MET'}"
                )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=2)
    parser.add_argument(
        "--duration",
        type=float,
        default=None,
        help="measured seconds; default: the digits smoke profile's (50)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=REPO_ROOT / "benchmarks/results/loadgen_paths.json",
    )
    parser.add_argument(
        "--cases",
        default="identical,latency,errors",
        help="comma-separated subset of: identical, latency, errors",
    )
    args = parser.parse_args()
    profile = profile_for(args.duration)
    cases: dict[str, list[Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        subprocess.run(
            [PY, str(MODELS_DIR / "digits/export.py"), "--out", str(work)],
            check=True,
            capture_output=True,
        )
        model = work / "digits"
        state = work / "state"
        # The +25 % fault is calibrated once, by the direct path (as gate_accuracy.py does):
        # the same absolute delay then goes to both paths.
        with server(model) as base_url, server(model) as twin_url:
            load_test(
                "direct",
                base_url,
                twin_url,
                work / "calibration",
                profile=profile_for(20),
                state=state,
            )
            median = float(np.median(latencies(work / "calibration" / "baseline")))
        every = {
            "identical": ("identical versions", ""),
            "latency": ("+25% latency", f"latency_ms={0.25 * median:.3f}"),
            "errors": ("1% errors", "error_ratio=0.01"),
        }
        chosen = [every[c] for c in args.cases.split(",") if c in every]
        faults_of = dict(chosen)
        for name, faults in chosen:
            trials = cases.setdefault(name, [])
            with server(model) as base_url, server(model, faults) as cand_url:
                for i in range(args.trials):
                    order = PATHS if i % 2 == 0 else PATHS[::-1]
                    trial: dict[str, Any] = {"order": list(order)}
                    for path in order:
                        out = work / f"{name}-{i}-{path}"
                        trial[path] = run(
                            path, base_url, cand_url, out, profile=profile, state=state
                        )
                        print(f"{name} #{i} {path}: {json.dumps(trial[path])}", file=sys.stderr)
                    trials.append(trial)
    summaries = [summarise(name, trials) for name, trials in cases.items()]
    every_check = [s["checks"]["outcomes_agree"] for s in summaries] + [
        v["met"] for s in summaries for k, v in s["checks"].items() if k != "outcomes_agree"
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "date": time.strftime("%Y-%m-%d"),
        "command": " ".join(sys.argv),
        "profile": profile.model_dump(),
        "baseline_median_ms": median,
        "faults": faults_of,
        "all_checks_met": all(every_check),
    }
    args.out.write_text(
        json.dumps({**meta, "summaries": summaries, "trials": cases}, indent=2) + "\n"
    )
    print(f"calibration: baseline median latency {median:.2f} ms")
    print_tables(summaries, cases)
    print(f"\nall checks met: {all(every_check)}; figures: {args.out}")


if __name__ == "__main__":
    main()
