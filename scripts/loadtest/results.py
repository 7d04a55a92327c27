"""Load-test results: per-request samples → the figures the gate judges.

``RESULT_FILE`` (``result.json``) in each track's directory holds the summary;
``samples.csv`` keeps every measured request (after the warm-up) for the
statistics (Mann–Whitney needs the distributions, not just percentiles).
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

RESULT_FILE = "result.json"
SAMPLES_FILE = "samples.csv"


@dataclass
class TrackResult:
    track: str
    endpoints: list[str]
    target_rate: float
    duration_s: float
    warmup_s: float
    samples: int
    errors: int
    achieved_rate: float
    latency_ms: dict[str, float]  # p50, p95, p99, mean, max (from scheduled send time)
    generator_cpu: float  # busiest generator process, fraction of one core
    generator_lag_p99_ms: float
    saturated: bool
    saturation_reasons: list[str] = field(default_factory=list)
    broken: str = ""  # the run itself failed (no samples written, locust crashed...)

    @property
    def error_ratio(self) -> float:
        return self.errors / self.samples if self.samples else 0.0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["error_ratio"] = self.error_ratio
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrackResult:
        fields = {k: v for k, v in data.items() if k != "error_ratio"}
        return cls(**fields)


def read_samples(directory: Path) -> list[dict[str, str]]:
    path = directory / SAMPLES_FILE
    if not path.is_file():
        return []
    with path.open() as fh:
        return list(csv.DictReader(fh))


def latencies(directory: Path) -> np.ndarray:
    rows = read_samples(directory)
    return np.array([float(r["latency_ms"]) for r in rows], dtype=float)


def successes(directory: Path) -> tuple[int, int]:
    rows = read_samples(directory)
    return sum(1 for r in rows if r["ok"] == "1"), len(rows)


def percentiles(values: np.ndarray) -> dict[str, float]:
    if values.size == 0:
        return {}
    return {
        "p50": float(np.percentile(values, 50)),
        "p95": float(np.percentile(values, 95)),
        "p99": float(np.percentile(values, 99)),
        "mean": float(values.mean()),
        "max": float(values.max()),
    }


def load(directory: Path) -> TrackResult:
    return TrackResult.from_dict(json.loads((directory / RESULT_FILE).read_text()))


def save(directory: Path, result: TrackResult) -> None:
    from scripts.atomic import write_text_atomic

    write_text_atomic(directory / RESULT_FILE, json.dumps(result.to_dict(), indent=2) + "\n")
