"""Benchmark: baking a ~100-200 MB model into an image and pushing it (issue #3).

Compared in the same run, interleaved trial by trial (these machines are noisy):

* ours    — `python -m scripts build` (registry builder), cold layer cache, a new
            repository each trial, base already in the registry (mounted);
* buildah — from + copy + config + commit + push (vfs storage), same content,
            same registry;
* floor   — the irreducible work: tar + sha256 + isal gzip of the same files and
            one monolithic upload of those bytes (in-process, no CLI start-up);
* rebuild — `python -m scripts build` again for an image that already exists.

Targets: ours ≤ 1.5× floor; ours ≥ 3× faster than buildah; rebuild ≤ 0.5 s.

    .venv/bin/python benchmarks/image_build.py [--trials 5] [--model-dir DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path, PurePosixPath

import requests
from isal import igzip

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from tests.fakes.base_images import push_bases, write_base_layout  # noqa: E402
from tests.fakes.registry_server import RegistryServer  # noqa: E402

PY = sys.executable


def export_resnet(out: Path) -> Path:
    subprocess.run(
        [PY, str(REPO_ROOT / "models/resnet50/export.py"), "--out", str(out)],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    return out / "resnet50"


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def timed(cmd: list[str], env: dict[str, str] | None = None) -> float:
    started = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    return time.perf_counter() - started


def ours(model: Path, base: str, image: str, cache: Path) -> float:
    return timed(
        [
            PY,
            "-m",
            "scripts",
            "build",
            "--model-dir",
            str(model),
            "--base",
            base,
            "--image",
            image,
            "--cache-dir",
            str(cache),
            "-q",
        ]
    )


def buildah(model: Path, base: str, image: str, storage: Path) -> float:
    b = [
        "buildah",
        "--storage-driver",
        "vfs",
        "--root",
        str(storage / "root"),
        "--runroot",
        str(storage / "run"),
    ]
    started = time.perf_counter()
    ctr = subprocess.run(
        [*b, "from", "--quiet", "--tls-verify=false", f"docker://{base}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    version = sorted(p.name for p in model.iterdir() if p.name.isdigit())[-1]
    subprocess.run(
        [*b, "copy", ctr, str(model / version), f"/models/{model.name}/{version}"],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [*b, "config", "--env", f"MODEL_NAME={model.name}", ctr], check=True, capture_output=True
    )
    subprocess.run(
        [*b, "commit", "--quiet", ctr, "localhost/bench:latest"], check=True, capture_output=True
    )
    subprocess.run(
        [
            *b,
            "push",
            "--quiet",
            "--tls-verify=false",
            "localhost/bench:latest",
            f"docker://{image}",
        ],
        check=True,
        capture_output=True,
    )
    elapsed = time.perf_counter() - started
    subprocess.run([*b, "rm", ctr], check=True, capture_output=True)
    return elapsed


def floor(model: Path, registry: str, repo: str, scratch: Path) -> float:
    started = time.perf_counter()
    blob_path = scratch / "floor.blob"
    digest = hashlib.sha256()

    class Sink:
        def __init__(self, fh: object) -> None:
            self.fh = fh

        def write(self, data: bytes) -> int:
            digest.update(data)
            self.fh.write(data)  # type: ignore[attr-defined]
            return len(data)

        def flush(self) -> None:
            pass

    with blob_path.open("wb") as fh:
        gz = igzip.IGzipFile(fileobj=Sink(fh), mode="wb", compresslevel=1, mtime=0)
        with tarfile.open(fileobj=gz, mode="w|") as tar:
            tar.add(model, arcname=str(PurePosixPath("models", model.name)))
        gz.close()
    blob_digest = f"sha256:{digest.hexdigest()}"
    with requests.Session() as session:
        start = session.post(f"http://{registry}/v2/{repo}/blobs/uploads/", timeout=60)
        location = start.headers["Location"]
        sep = "&" if "?" in location else "?"
        with blob_path.open("rb") as body:
            done = session.put(
                f"{location}{sep}digest={blob_digest}",
                data=body,
                timeout=300,
                headers={"Content-Type": "application/octet-stream"},
            )
        done.raise_for_status()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--model-dir", type=Path, help="model base dir (default: export ResNet50)")
    parser.add_argument(
        "--out", type=Path, default=REPO_ROOT / "benchmarks/results/image_build.json"
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-image-"))
    try:
        model = args.model_dir or export_resnet(work / "export")
        size = dir_size(model)
        print(f"model {model} ({size / 1e6:.0f} MB)", file=sys.stderr)
        times: dict[str, list[float]] = {"ours": [], "buildah": [], "floor": [], "rebuild": []}
        with RegistryServer() as server:
            bases = push_bases(write_base_layout(work / "base"), server.host)
            base = bases["docker"]
            for trial in range(args.trials):
                cache = work / f"cache-{trial}"
                times["ours"].append(ours(model, base, f"{server.host}/ours/t{trial}", cache))
                times["rebuild"].append(ours(model, base, f"{server.host}/ours/t{trial}", cache))
                times["buildah"].append(
                    buildah(model, base, f"{server.host}/buildah/t{trial}:v1", work / "buildah")
                )
                times["floor"].append(floor(model, server.host, f"floor/t{trial}", work))
                shutil.rmtree(cache)
                print(
                    f"trial {trial}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items()),
                    file=sys.stderr,
                )
        med = {k: statistics.median(v) for k, v in times.items()}
        result = {
            "model_bytes": size,
            "trials": args.trials,
            "cpus": os.cpu_count(),
            "median_s": med,
            "all_s": times,
            "ours_over_floor": med["ours"] / med["floor"],
            "buildah_over_ours": med["buildah"] / med["ours"],
            "targets": {
                "ours_over_floor<=1.5": med["ours"] / med["floor"] <= 1.5,
                "buildah_over_ours>=3": med["buildah"] / med["ours"] >= 3,
                "rebuild<=0.5s": med["rebuild"] <= 0.5,
            },
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"| step | median of {args.trials} (s) |\n|---|---|")
        for key in ("floor", "ours", "buildah", "rebuild"):
            print(f"| {key} | {med[key]:.2f} |")
        print(
            f"\nours / floor = {result['ours_over_floor']:.2f} (target ≤ 1.5); "
            f"buildah / ours = {result['buildah_over_ours']:.1f} (target ≥ 3); "
            f"rebuild = {med['rebuild']:.2f} s (target ≤ 0.5)"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
