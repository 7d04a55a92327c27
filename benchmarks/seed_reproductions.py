"""The seed projects' two experiments, reproduced on this machine with `bench --target local`.

1. ``threads`` — the TorchServe article's ablation: under a 0.5-CPU quota, TensorFlow's
   default threads (one per core of the *machine*) against threads derived from the CPU
   request (what the base does through the Downward API). Overlays
   ``local-threads-default`` and ``local-threads-request``; two bench runs in opposite
   orders (ABBA), so drift favours neither. Reported: capacity at the SLO, and p99 and
   throttled periods at the same offered rates (the ramp's rates, which both runs
   measure). Target: p99 with derived threads ≤ 0.5 × p99 with the defaults, and a higher
   capacity.
2. ``matrix`` — the source project's overlay matrix scaled to two cores, at equal total
   CPU (0.5): fewer bigger replicas vs more smaller ones, inter-op 1 vs 2, batching on vs
   off. Reported: the ranking by $/1M and the knee curves (the bench's charts).

Full bench mode (3 s + 15 s steps, the capacity point measured 3 times) by default, or
``--quick`` (1 s + 4 s steps, measured once: ~4× shorter). Results (the bench.json files
and charts) go to benchmarks/results/seed-<name>/.

    .venv/bin/python benchmarks/seed_reproductions.py threads --quick   # ~12 min on 2 cores
    .venv/bin/python benchmarks/seed_reproductions.py matrix --quick    # ~15 min
    (full mode: ~50 min each)
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from benchmarks.bench_search import build_image  # noqa: E402
from scripts.bench.api import BenchRequest, run_bench  # noqa: E402
from scripts.bench.results import BenchResult  # noqa: E402
from scripts.config import Settings  # noqa: E402
from scripts.deploy.targets import TargetConfig  # noqa: E402

RESULTS = REPO_ROOT / "benchmarks" / "results"
THREADS = ("local-threads-request", "local-threads-default")
MATRIX = ("local-1x500m", "local-2x250m", "local-1x500m-interop2", "local-1x500m-batching")


QUICK = False  # --quick: 1 s + 4 s steps, the capacity point measured once


def bench(image: str, overlays: tuple[str, ...], work: Path, label: str) -> BenchResult:
    return run_bench(
        BenchRequest(
            model="digits",
            overlays=list(overlays),
            out=work / label,
            target=TargetConfig(kind="local", state_dir=work / "state", timeout_s=180),
            image=image,
            quick=QUICK,
        ),
        None,
        Settings(cache_dir=work / "cache"),
    )


def keep(result_dir: Path, name: str) -> Path:
    dest = RESULTS / f"seed-{name}"
    dest.mkdir(parents=True, exist_ok=True)
    for item in ("bench.json", "report.md", "p99-vs-offered.png", "achieved-vs-offered.png",
                 "cost-vs-capacity.png"):  # fmt: skip
        if (result_dir / item).exists():
            shutil.copy2(result_dir / item, dest / item)
    return dest


def threads(image: str, work: Path) -> dict[str, Any]:
    runs = [bench(image, THREADS, work, "ab"), bench(image, THREADS[::-1], work, "ba")]
    keep(work / "ab", "threads-ab")
    keep(work / "ba", "threads-ba")
    same_load: dict[float, dict[str, list[tuple[float, float | None]]]] = {}
    capacity: dict[str, list[float | None]] = {o: [] for o in THREADS}
    for run in runs:
        for overlay in run.overlays:
            capacity[overlay.name].append(overlay.capacity_rps)
            for step in overlay.steps:
                if step.phase == "ramp" and step.verdict != "invalid":
                    slot = same_load.setdefault(step.offered_rps, {o: [] for o in THREADS})
                    slot[overlay.name].append((step.p99_ms, step.throttled_ratio))
    rows = []
    for rate in sorted(same_load):
        cell = same_load[rate]
        if not all(len(cell[o]) == len(runs) for o in THREADS):
            continue  # measured by both overlays in both runs only
        p99 = {o: statistics.median(v[0] for v in cell[o]) for o in THREADS}
        throttled = {
            o: statistics.median(v[1] for v in cell[o] if v[1] is not None) if any(
                v[1] is not None for v in cell[o]) else None
            for o in THREADS
        }  # fmt: skip
        rows.append({
            "offered_rps": rate,
            "p99_ms": p99,
            "throttled": throttled,
            "p99_ratio_request_over_default": p99[THREADS[0]] / p99[THREADS[1]],
        })  # fmt: skip
    return {"capacity": capacity, "same_load": rows}


def matrix(image: str, work: Path) -> dict[str, Any]:
    result = bench(image, MATRIX, work, "matrix")
    keep(work / "matrix", "matrix")
    ranked = sorted(
        (o for o in result.overlays if o.cost and o.cost.per_million is not None),
        key=lambda o: o.cost.per_million or 0.0,  # type: ignore[union-attr]
    )
    rows = [
        {
            "overlay": o.name,
            "capacity_rps": o.capacity_rps,
            "spread": o.spread,
            "cost_per_million": o.cost.per_million if o.cost else None,
            "p99_ms": o.at_capacity.p99_ms if o.at_capacity else None,
            "throttled": o.at_capacity.throttled_ratio if o.at_capacity else None,
        }
        for o in ranked
    ]
    return {
        "ranking": rows,
        "winner": result.winner,
        "winner_note": result.winner_note,
        "summary": result.summary,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("experiment", choices=("threads", "matrix"))
    p.add_argument("--quick", action="store_true", help="bench's quick mode (~4x shorter)")
    args = p.parse_args()
    global QUICK  # noqa: PLW0603 - one switch for the whole script
    QUICK = args.quick
    with tempfile.TemporaryDirectory(prefix="seed-") as tmp:
        work = Path(tmp)
        image = build_image(work)
        report = threads(image, work) if args.experiment == "threads" else matrix(image, work)
    machine = subprocess.run(["nproc"], capture_output=True, text=True, check=False).stdout
    report["cpus"] = machine.strip()
    report["mode"] = "quick" if QUICK else "full"
    out = RESULTS / f"seed-{args.experiment}.json"
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
