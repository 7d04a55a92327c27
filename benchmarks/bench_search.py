"""Benchmark of the benchmark: the capacity search against an exhaustive fine sweep.

For each of two local overlays (local-1x500m: 1 × 0.5 CPU; local-2x250m: 2 × 0.25 CPU,
both under CFS quotas), deployed once, on the digits model:

* search: ``bench``'s own search (warm-up, ×2 ramp, bisection to 5 %, the capacity point
  measured 3 times);
* sweep: every offered rate from ``--sweep-step`` up in steps of ``--sweep-step`` req/s,
  until two consecutive steps fail; its capacity is the highest rate below the first
  failure (every lower rate passed).

Both use the same step (1 s unmeasured + 4 s measured, the quick timing) and the same
SLO (the digits model.yaml's: p99 ≤ 120 ms, errors ≤ 1 %, ≥ 95 % answered), and run in
alternating order (search first for the first overlay, sweep first for the second), so
drift on a noisy machine favours neither. Targets (issue 13): the search's capacity
within 10 % of the sweep's, in at most a third of the sweep's time.

    .venv/bin/python benchmarks/bench_search.py          # ~15 min on 2 cores
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from scripts.bench.api import BenchRequest  # noqa: E402
from scripts.bench.orchestrate import slo_for  # noqa: E402
from scripts.bench.results import Slo, Step  # noqa: E402
from scripts.bench.search import SearchPlan, find_capacity  # noqa: E402
from scripts.bench.slots import LocalSlots, Slot  # noqa: E402
from scripts.bench.steps import StepRunner, StepTiming  # noqa: E402
from scripts.deploy.targets import TargetConfig  # noqa: E402
from scripts.loadtest.runner import run_load_test  # noqa: E402
from scripts.manifests.render import RenderRequest, render  # noqa: E402
from scripts.model_spec import model_spec_for  # noqa: E402

PY = sys.executable
OVERLAYS = ("local-1x500m", "local-2x250m")
CAPACITY_TOLERANCE = 0.10
TIME_FRACTION = 1 / 3


def build_image(work: Path) -> str:
    """digits v1 trained, packaged, fetched and built into an OCI layout, as `make demo` does."""
    export = work / "export"
    subprocess.run(
        [PY, str(REPO_ROOT / "models/digits/export.py"), "--out", str(export), "--version", "1",
         "--epochs", "3", "--seed", "1"],
        check=True, capture_output=True,
    )  # fmt: skip
    built = subprocess.run(
        [PY, "-m", "scripts", "build", "--model-dir", str(export / "digits"), "--image",
         f"oci:{work / 'images'}", "--base", "scratch", "--json", "-q"],
        check=True, capture_output=True, text=True, cwd=REPO_ROOT,
    )  # fmt: skip
    return str(json.loads(built.stdout)["image"])


def sweep(runner: StepRunner, step_rps: float, limit: float) -> tuple[float | None, list[Step]]:
    steps: list[Step] = []
    rate, failures, capacity = step_rps, 0, None
    while rate <= limit:
        step = runner(rate, "sweep")
        steps.append(step)
        if step.passed:
            if failures == 0:
                capacity = rate
        else:
            failures += 1
            if failures == 2:
                break
        rate += step_rps
    return capacity, steps


def row(
    overlay: str, kind: str, capacity: float | None, steps: list[Step], seconds: float
) -> dict[str, Any]:
    return {
        "overlay": overlay,
        "method": kind,
        "capacity_rps": capacity,
        "steps": len(steps),
        "seconds": round(seconds, 1),
        "invalid_steps": sum(1 for s in steps if s.verdict == "invalid"),
        "trace": [[round(s.offered_rps, 1), s.verdict, round(s.p99_ms, 1)] for s in steps],
    }


def measure(
    slot: Slot, overlay: str, work: Path, slo: Slo, *, search_first: bool, args: argparse.Namespace
) -> list[dict[str, Any]]:
    spec = model_spec_for("digits")

    def runner(label: str) -> StepRunner:
        return StepRunner(
            model="digits", endpoints=slot.rest, payload=spec.sample_request,
            signature_name=spec.signature, protocol="rest", slo=slo,
            timing=StepTiming.for_mode(quick=True), out=work / "out" / overlay / label,
            generator=run_load_test, probe=slot.probe,
        )  # fmt: skip

    rows = []
    for method in ("search", "sweep") if search_first else ("sweep", "search"):
        started = time.monotonic()
        if method == "search":
            found = find_capacity(runner("search"), SearchPlan(start_rps=20))
            capacity, steps = found.rps, found.steps
        else:
            capacity, steps = sweep(runner("sweep"), args.sweep_step, args.sweep_limit)
        rows.append(row(overlay, method, capacity, steps, time.monotonic() - started))
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "trace"}), flush=True)
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sweep-step", type=float, default=20.0, help="sweep resolution, req/s")
    p.add_argument("--sweep-limit", type=float, default=2000.0)
    p.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks/results/bench_search.json")
    args = p.parse_args()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-search-") as tmp:
        work = Path(tmp)
        image = build_image(work)
        request = BenchRequest(model="digits", overlays=list(OVERLAYS), out=work / "out",
                               target=TargetConfig(kind="local"), image=image)  # fmt: skip
        slo = slo_for(request, model_spec_for("digits"))
        host = LocalSlots(work / "state", "bsearch00000", cache_dir=work / "cache",
                          docker_config=None, timeout_s=120)  # fmt: skip
        try:
            for number, overlay in enumerate(OVERLAYS):
                rendered = render(RenderRequest(overlay=overlay, image=image, model="digits"))
                slot = host.deploy(rendered)
                rows += measure(slot, overlay, work, slo, search_first=number % 2 == 0, args=args)
                host.remove(slot)
        finally:
            host.remove_all()
    checks = []
    for overlay in OVERLAYS:
        search = next(r for r in rows if r["overlay"] == overlay and r["method"] == "search")
        swept = next(r for r in rows if r["overlay"] == overlay and r["method"] == "sweep")
        ratio = (
            (search["capacity_rps"] or 0) / swept["capacity_rps"] if swept["capacity_rps"] else None
        )
        time_fraction = search["seconds"] / swept["seconds"]
        checks.append({
            "overlay": overlay,
            "capacity_ratio": ratio,
            "within_10pct": ratio is not None and abs(ratio - 1) <= CAPACITY_TOLERANCE,
            "time_fraction": round(time_fraction, 3),
            "within_third": time_fraction <= TIME_FRACTION,
        })  # fmt: skip
    report = {"rows": rows, "checks": checks, "sweep_step_rps": args.sweep_step,
              "slo": {"p99_ms": slo.p99_ms, "error_ratio": slo.error_ratio}}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    for check in checks:
        print(json.dumps(check))
    return 0 if all(c["within_10pct"] and c["within_third"] for c in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
