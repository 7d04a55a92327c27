"""The test control plane: build time (cold, optional), the warm no-op, startup and stop.

Cold: module download and compile into empty module, build and binary caches
(``--cold``: temporary ones, removed afterwards; about 5 minutes and 6 GB on 2 cores).
Warm: the build when nothing changed. Startup: etcd, kube-apiserver to /readyz, the
controller-manager, the scheduler, kwok and 20 Ready nodes; stop: every process gone.
Startup is repeated (``--trials``) and reported as min/median/max, since the machines are
noisy.

    .venv/bin/python benchmarks/controlplane.py --trials 5 [--cold]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.controlplane.cluster import ControlPlane, build_all  # noqa: E402


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def cold_build() -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="cold-build-") as tmp:
        env = {
            **os.environ,
            "GOMODCACHE": f"{tmp}/gomod",
            "GOCACHE": f"{tmp}/gocache",
            "XDG_CACHE_HOME": f"{tmp}/xdg",
        }
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "tests.controlplane", "build"],
            cwd=ROOT,
            env=env,
            check=True,
            timeout=3600,
        )
        seconds = time.perf_counter() - started
        sizes = {name: du(Path(tmp) / name) / 1e9 for name in ("gomod", "gocache", "xdg")}
        subprocess.run(["chmod", "-R", "u+w", f"{tmp}/gomod"], check=True, timeout=300)
        return {
            "seconds": round(seconds, 1),
            "module_cache_gb": round(sizes["gomod"], 2),
            "build_cache_gb": round(sizes["gocache"], 2),
            "binaries_gb": round(sizes["xdg"], 2),
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--cold", action="store_true", help="also time a build from nothing")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "results" / "controlplane.json"
    )
    args = parser.parse_args()
    results: dict[str, object] = {}
    if args.cold:
        results["cold_build"] = cold_build()
    binaries = build_all()
    started = time.perf_counter()
    build_all(quiet=True)
    results["warm_noop_s"] = round(time.perf_counter() - started, 3)
    startups, stops = [], []
    for _ in range(args.trials):
        with tempfile.TemporaryDirectory(prefix="controlplane-bench-") as tmp:
            plane = ControlPlane(binaries, Path(tmp)).start()
            startups.append(plane.startup_s)
            started = time.perf_counter()
            plane.stop()
            stops.append(time.perf_counter() - started)
    results["startup_s"] = {
        "min": round(min(startups), 2),
        "median": round(statistics.median(startups), 2),
        "max": round(max(startups), 2),
        "trials": [round(s, 2) for s in startups],
    }
    results["stop_s"] = {"median": round(statistics.median(stops), 2), "max": round(max(stops), 2)}
    results["binaries_mb"] = round(sum(p.stat().st_size for p in binaries.values()) / 1e6)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
