"""Benchmark: how long the local model server takes from spawn to AVAILABLE.

Every local-target replica, every test that deploys locally and `make demo` pay this
start. Two variants, interleaved trial by trial on the same SavedModel (digits, exported
once):

* ``kept`` — the baseline: sklearn imported before the server's code, as before the
  change, so Keras (imported by TensorFlow) loads its scikit-learn wrappers;
* ``hidden`` — ``python -m scripts serve`` as shipped: ``hide_sklearn`` keeps
  scikit-learn out of the process (scripts/commands/serve.py).

Each trial spawns the server on 127.0.0.1 (REST only) and polls
``GET /v1/models/digits`` until AVAILABLE; medians and the spread are printed as JSON.

    .venv/bin/python benchmarks/server_start.py [--trials 8]
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

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from benchmarks.warmup_latency import _available, export, free_port  # noqa: E402

PY = sys.executable
SERVE_ARGS = ["--port=0", "--bind_address=127.0.0.1", "--model_name=digits"]
VARIANTS = {
    "kept": [
        PY,
        "-c",
        "import sklearn, sys; from scripts.cli import main; sys.exit(main(sys.argv[1:]))",
        "serve",
    ],
    "hidden": [PY, "-m", "scripts", "serve"],
}


def start_once(command: list[str], base: Path, log: Path) -> float:
    port = free_port()
    args = [*command, *SERVE_ARGS, f"--rest_api_port={port}", f"--model_base_path={base}"]
    with log.open("wb") as out:
        started = time.perf_counter()
        proc = subprocess.Popen(
            args, cwd=REPO_ROOT, stdout=out, stderr=out,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        )  # fmt: skip
        try:
            while not _available(port, "digits"):
                if proc.poll() is not None:
                    raise RuntimeError(f"server exited with {proc.returncode}: see {log}")
                if time.perf_counter() - started > 240:
                    raise RuntimeError("not ready after 240 s")
                time.sleep(0.05)
            return time.perf_counter() - started
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        version_dir = export("digits", work)
        base = version_dir.parent
        times: dict[str, list[float]] = {name: [] for name in VARIANTS}
        for trial in range(args.trials):
            for name, command in VARIANTS.items():
                times[name].append(start_once(command, base, work / f"{name}-{trial}.log"))
    summary = {
        name: {
            "median_s": round(statistics.median(values), 2),
            "min_s": round(min(values), 2),
            "max_s": round(max(values), 2),
        }
        for name, values in times.items()
    }
    summary["saved_s"] = round(summary["kept"]["median_s"] - summary["hidden"]["median_s"], 2)  # type: ignore[index,operator]
    print(json.dumps({"trials": args.trials, "variants": summary}, indent=2))


if __name__ == "__main__":
    main()
