"""A delivery job's setup time: installing its requirements from a warm pip cache.

Before: the jobs would install requirements.txt (TensorFlow, Keras, scikit-learn and the
model server with the deploy path). After: requirements-deploy.txt, which the deploy
path needs and nothing else (.github/actions/setup, `requirements: deploy`). Both are
installed the way the setup action does it (pinned by constraints.txt, then
requirements-nodeps.txt with --no-deps), into fresh virtual environments, from one pip
cache warmed first: what a job sees when actions/setup-python restores its pip cache.
Trials are interleaved (these machines are noisy); medians are reported with the
installed size of each environment.

    .venv/bin/python benchmarks/job_setup.py --trials 3 [--out benchmarks/results/job_setup.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETS = {
    "before: requirements.txt": "requirements.txt",
    "after: requirements-deploy.txt": "requirements-deploy.txt",
}


def install(requirements: str, cache: Path, where: Path) -> tuple[float, int]:
    venv = where / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    pip = [
        str(venv / "bin" / "python"),
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--cache-dir",
        str(cache),
    ]
    started = time.perf_counter()
    subprocess.run(
        [*pip, "-r", str(ROOT / requirements), "-c", str(ROOT / "constraints.txt")],
        check=True,
        timeout=1800,
    )
    subprocess.run(
        [*pip, "--no-deps", "-r", str(ROOT / "requirements-nodeps.txt")], check=True, timeout=600
    )
    elapsed = time.perf_counter() - started
    size = sum(p.stat().st_size for p in venv.rglob("*") if p.is_file() and not p.is_symlink())
    return elapsed, size


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "results" / "job_setup.json"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="job-setup-") as tmp:
        cache = Path(tmp) / "pip-cache"
        print("warming the pip cache with every wheel either set needs...", file=sys.stderr)
        install("requirements.txt", cache, Path(tmp) / "warm")
        results: dict[str, list[dict[str, float]]] = {name: [] for name in SETS}
        for trial in range(args.trials):
            for name, requirements in SETS.items():
                where = Path(tmp) / f"{trial}-{requirements}"
                where.mkdir()
                seconds, size = install(requirements, cache, where)
                results[name].append({"seconds": round(seconds, 1), "bytes": size})
                print(
                    f"trial {trial + 1} {name}: {seconds:.1f} s, {size / 1e6:.0f} MB",
                    file=sys.stderr,
                )
    summary = {
        name: {
            "median_seconds": statistics.median(r["seconds"] for r in rows),
            "installed_mb": round(statistics.median(r["bytes"] for r in rows) / 1e6),
            "trials": rows,
        }
        for name, rows in results.items()
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    print("| requirements | setup (median, warm cache) | installed |\n|---|---|---|")
    for name, row in summary.items():
        print(f"| {name} | {row['median_seconds']:.1f} s | {row['installed_mb']} MB |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
