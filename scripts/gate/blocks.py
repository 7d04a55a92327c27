"""Latency against the baseline, replicated where the noise is: time blocks.

Requests are not independent samples: the noise that moves a latency distribution
belongs to the process and the moment (a core shared with the generator, a noisy
neighbour, a GC pause), so a per-request test finds "significance" (p = 1e-164) between
two identical servers. The canary and the baseline are loaded at the same time, so the
window is cut into equal time blocks and each block gives one *paired* unit: the
canary's and the baseline's latency percentile over the same seconds, as a log ratio.

* the effect is the median of the per-block ratios (robust to one odd block);
* the test is a one-sided Wilcoxon signed-rank test on the per-block log ratios
  (canary slower than the baseline), whose error rate holds when blocks, not requests,
  are the replicates;
* a block counts only with ``min_block_samples`` successful requests on both tracks;
  with fewer than ``min_units`` such blocks the comparison is inconclusive.

Several pods per track (the load test sends to each pod's own address when a track has
more than one: ``KubernetesTarget`` reads the ready pods, the local target has one
process per replica): a track's value in a block is the *median over its pods* of each
pod's percentile, not the percentile of the pooled requests. Each pod weighs the same
however the requests were spread, and one odd pod (a noisy node) moves the block's value
less than pooling would (not at all with three or more pods). A block counts only when
every pod of both tracks has ``min_block_samples`` requests in it. The pods' own
percentiles are reported, so a verdict shows one slow pod.

Requests are placed in blocks by their *scheduled* send time (completion − latency),
the time the open-loop schedule gave both tracks alike.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from scripts.loadtest.results import read_samples


@dataclass(frozen=True)
class TimedLatencies:
    """One track's successful requests: scheduled send times (s), latencies (ms) and the
    endpoint (pod) each went to (None: one unit, the track)."""

    scheduled: np.ndarray
    latency_ms: np.ndarray
    endpoint: np.ndarray | None = None

    @classmethod
    def read(cls, directory: Path) -> TimedLatencies:
        rows = [r for r in read_samples(directory) if r.get("ok") == "1"]
        latency = np.array([float(r["latency_ms"]) for r in rows], dtype=float)
        done = np.array([float(r["t"]) for r in rows], dtype=float)
        endpoint = np.array([r.get("endpoint") or "" for r in rows], dtype=object)
        return cls(done - latency / 1e3, latency, endpoint)

    def pods(self) -> list[tuple[str, np.ndarray, np.ndarray]]:
        """(endpoint, scheduled, latency_ms) per endpoint, by endpoint; one entry ("")
        when the endpoints are not known."""
        if self.endpoint is None or self.endpoint.size == 0:
            return [("", self.scheduled, self.latency_ms)]
        return [
            (
                str(name),
                self.scheduled[self.endpoint == name],
                self.latency_ms[self.endpoint == name],
            )
            for name in sorted(set(self.endpoint.tolist()))
        ]


@dataclass(frozen=True)
class BlockComparison:
    blocks: int  # blocks the window was cut into
    units: int  # blocks with enough requests on both tracks (the replicates)
    ratio: float  # median over units of canary / baseline percentile
    p_value: float  # one-sided Wilcoxon signed-rank on the log ratios (1.0: no units)
    delta_ms: float  # median over units of canary − baseline percentile
    canary_ms: float  # median over units of the canary's block percentile
    baseline_ms: float
    ratios: tuple[float, ...]  # per unit, in time order
    block_s: float
    # endpoint → the median over units of its block percentile (ms), per track
    pods: dict[str, dict[str, float]] = field(default_factory=dict)

    def pod_counts(self) -> tuple[int, int]:
        """Pods (endpoints) per track: (canary, baseline); 1 when not known."""
        return len(self.pods.get("canary", {})) or 1, len(self.pods.get("baseline", {})) or 1

    def to_dict(self) -> dict[str, object]:
        return {
            "blocks": self.blocks,
            "units": self.units,
            "ratio": self.ratio,
            "p_value": self.p_value,
            "delta_ms": self.delta_ms,
            "canary_ms": self.canary_ms,
            "baseline_ms": self.baseline_ms,
            "ratios": list(self.ratios),
            "block_s": self.block_s,
            "pods": self.pods,
        }


def _wilcoxon_greater(values: np.ndarray) -> float:
    """One-sided p that the values are centred above 0 (1.0 when undefined)."""
    from scipy.stats import wilcoxon

    nonzero = values[values != 0]
    if nonzero.size == 0:
        return 1.0
    return float(wilcoxon(nonzero, alternative="greater").pvalue)


def compare_blocks(
    canary: TimedLatencies,
    baseline: TimedLatencies,
    *,
    percentile: float = 50.0,
    blocks: int = 10,
    min_block_samples: int = 10,
) -> BlockComparison:
    """Cut the common window into at most ``blocks`` equal blocks (fewer when a pod has
    too few requests to give each block ``min_block_samples``) and compare per block."""
    tracks = {"canary": canary.pods(), "baseline": baseline.pods()}
    fewest = min(p[1].size for pods in tracks.values() for p in pods)
    blocks = max(1, min(blocks, fewest // max(1, min_block_samples)))
    unknown = {
        name: dict.fromkeys((pod for pod, _, _ in pods), math.nan) for name, pods in tracks.items()
    }
    if fewest == 0:
        return BlockComparison(
            blocks, 0, math.nan, 1.0, math.nan, math.nan, math.nan, (), 0.0, unknown
        )
    start = max(canary.scheduled.min(), baseline.scheduled.min())
    end = min(canary.scheduled.max(), baseline.scheduled.max())
    width = (end - start) / blocks if end > start else 0.0
    ratios: list[float] = []
    deltas: list[float] = []
    values: dict[str, list[float]] = {"canary": [], "baseline": []}
    per_pod: dict[str, dict[str, list[float]]] = {
        name: {pod: [] for pod, _, _ in pods} for name, pods in tracks.items()
    }
    for index in range(blocks if width > 0 else 0):
        low, high = start + index * width, start + (index + 1) * width
        last = index == blocks - 1
        block: dict[str, dict[str, float]] = {}
        for name, pods in tracks.items():
            block[name] = {}
            for pod, scheduled, latency in pods:
                inside = (scheduled >= low) & ((scheduled <= high) if last else (scheduled < high))
                if np.count_nonzero(inside) >= min_block_samples:
                    block[name][pod] = float(np.percentile(latency[inside], percentile))
        if any(len(block[name]) < len(pods) for name, pods in tracks.items()):
            continue  # a pod without enough requests here: the block does not count
        c, b = (float(np.median(list(block[name].values()))) for name in ("canary", "baseline"))
        if c <= 0 or b <= 0:
            continue
        ratios.append(c / b)
        deltas.append(c - b)
        values["canary"].append(c)
        values["baseline"].append(b)
        for name in tracks:
            for pod, value in block[name].items():
                per_pod[name][pod].append(value)
    if not ratios:
        return BlockComparison(
            blocks, 0, math.nan, 1.0, math.nan, math.nan, math.nan, (), width, unknown
        )
    logs = np.log(np.array(ratios))
    return BlockComparison(
        blocks=blocks,
        units=len(ratios),
        ratio=float(math.exp(float(np.median(logs)))),
        p_value=_wilcoxon_greater(logs),
        delta_ms=float(np.median(deltas)),
        canary_ms=float(np.median(values["canary"])),
        baseline_ms=float(np.median(values["baseline"])),
        ratios=tuple(ratios),
        block_s=width,
        pods={
            name: {pod: float(np.median(v)) for pod, v in pods.items()}
            for name, pods in per_pod.items()
        },
    )
