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

Requests are placed in blocks by their *scheduled* send time (completion − latency),
the time the open-loop schedule gave both tracks alike.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scripts.loadtest.results import read_samples


@dataclass(frozen=True)
class TimedLatencies:
    """One track's successful requests: scheduled send times (s) and latencies (ms)."""

    scheduled: np.ndarray
    latency_ms: np.ndarray

    @classmethod
    def read(cls, directory: Path) -> TimedLatencies:
        rows = [r for r in read_samples(directory) if r.get("ok") == "1"]
        latency = np.array([float(r["latency_ms"]) for r in rows], dtype=float)
        done = np.array([float(r["t"]) for r in rows], dtype=float)
        return cls(done - latency / 1e3, latency)


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
    """Cut the common window into at most ``blocks`` equal blocks (fewer when a track
    has too few requests to give each block ``min_block_samples``) and compare per block."""
    fewest = min(canary.scheduled.size, baseline.scheduled.size)
    blocks = max(1, min(blocks, fewest // max(1, min_block_samples)))
    if fewest == 0:
        return BlockComparison(blocks, 0, math.nan, 1.0, math.nan, math.nan, math.nan, (), 0.0)
    start = max(canary.scheduled.min(), baseline.scheduled.min())
    end = min(canary.scheduled.max(), baseline.scheduled.max())
    width = (end - start) / blocks if end > start else 0.0
    ratios: list[float] = []
    deltas: list[float] = []
    c_values: list[float] = []
    b_values: list[float] = []
    for index in range(blocks if width > 0 else 0):
        low, high = start + index * width, start + (index + 1) * width
        last = index == blocks - 1
        pair = []
        for track in (canary, baseline):
            inside = (track.scheduled >= low) & (
                (track.scheduled <= high) if last else (track.scheduled < high)
            )
            pair.append(track.latency_ms[inside])
        if min(p.size for p in pair) < min_block_samples:
            continue
        c, b = (float(np.percentile(p, percentile)) for p in pair)
        if c <= 0 or b <= 0:
            continue
        ratios.append(c / b)
        deltas.append(c - b)
        c_values.append(c)
        b_values.append(b)
    if not ratios:
        return BlockComparison(blocks, 0, math.nan, 1.0, math.nan, math.nan, math.nan, (), width)
    logs = np.log(np.array(ratios))
    return BlockComparison(
        blocks=blocks,
        units=len(ratios),
        ratio=float(math.exp(float(np.median(logs)))),
        p_value=_wilcoxon_greater(logs),
        delta_ms=float(np.median(deltas)),
        canary_ms=float(np.median(c_values)),
        baseline_ms=float(np.median(b_values)),
        ratios=tuple(ratios),
        block_s=width,
    )
