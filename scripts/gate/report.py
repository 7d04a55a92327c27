"""The gate's report: Markdown (step summary, PR comment) and PNG charts (matplotlib)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from scripts.gate.verdict import Verdict
from scripts.loadtest.results import read_samples

ICONS = {"pass": "✅", "fail": "❌", "inconclusive": "⚠️", "error": "💥", "dry-run": "🔍"}
COMMENT_LIMIT = 65_000  # GitHub's PR comment limit is 65,536 characters


def _fmt(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"


def markdown(verdict: Verdict, title: str, charts: list[Path] | None = None) -> str:
    lines = [f"### {ICONS.get(verdict.outcome, '')} {title}: **{verdict.outcome.upper()}**", ""]
    lines += [f"- {reason}" for reason in verdict.reasons]
    lines += ["", "| metric | measured | rule | verdict | reason |", "|---|---|---|---|---|"]
    for row in verdict.rows:
        lines.append(
            f"| `{row.metric}` | {_fmt(row.value)} | {row.rule} | "
            f"{ICONS.get(row.verdict, '')} {row.verdict} | {row.reason} |"
        )
    candidate = verdict.candidate
    if candidate:
        lines += [
            "",
            f"Candidate: {candidate.get('samples')} samples at "
            f"{_fmt(candidate.get('achieved_rate'))} req/s (target "
            f"{_fmt(candidate.get('target_rate'))}), generator CPU "
            f"{candidate.get('generator_cpu', 0):.0%}.",
        ]
    if verdict.baseline:
        lines.append(
            f"Baseline: {verdict.baseline.get('samples')} samples at "
            f"{_fmt(verdict.baseline.get('achieved_rate'))} req/s."
        )
    for chart in charts or []:
        lines.append(f"\nChart: `{chart}`")
    text = "\n".join(lines) + "\n"
    return text[:COMMENT_LIMIT]


def _series(directory: Path) -> tuple[np.ndarray, np.ndarray]:
    rows = read_samples(directory)
    if not rows:
        return np.array([]), np.array([])
    t = np.array([float(r["t"]) for r in rows])
    latency = np.array([float(r["latency_ms"]) for r in rows])
    return t - t.min(), latency


def charts(candidate_dir: Path, baseline_dir: Path | None, out: Path) -> list[Path]:
    """Latency percentiles and throughput over time, canary vs baseline."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    tracks = [("canary", candidate_dir)] + ([("baseline", baseline_dir)] if baseline_dir else [])
    series = {name: _series(path) for name, path in tracks}
    fig, ax = plt.subplots(figsize=(9, 4.5))
    colors = {"canary": "tab:orange", "baseline": "tab:blue"}
    for name, (t, latency) in series.items():
        if not t.size:
            continue
        seconds = np.floor(t).astype(int)
        buckets = np.unique(seconds)
        for q, style in ((50, ":"), (95, "--"), (99, "-")):
            values = [np.percentile(latency[seconds == b], q) for b in buckets]
            ax.plot(buckets, values, style, color=colors[name], label=f"{name} p{q}")
    ax.set_xlabel("seconds into the measured window")
    ax.set_ylabel("latency (ms, from scheduled send)")
    ax.set_title("Latency percentiles over time")
    ax.legend(ncol=2, fontsize=8)
    ax.grid(alpha=0.3)
    latency_png = out / "latency.png"
    fig.tight_layout()
    fig.savefig(latency_png, dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(9, 3.5))
    for name, (t, _) in series.items():
        if not t.size:
            continue
        seconds = np.floor(t).astype(int)
        buckets, counts = np.unique(seconds, return_counts=True)
        ax.plot(buckets, counts, color=colors[name], label=name)
    ax.set_xlabel("seconds into the measured window")
    ax.set_ylabel("completed requests / s")
    ax.set_title("Throughput over time")
    ax.legend()
    ax.grid(alpha=0.3)
    throughput_png = out / "throughput.png"
    fig.tight_layout()
    fig.savefig(throughput_png, dpi=110)
    plt.close(fig)
    return [latency_png, throughput_png]
