"""The gate's report: Markdown (step summary, PR comment), PNG charts (matplotlib) and the
same charts as Mermaid ``xychart-beta`` blocks, which GitHub renders in step summaries
and comments without an image host (the API cannot attach images to comments)."""

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


MERMAID_POINTS = 30  # windows per chart: enough to see a trend, small enough to post


def _mermaid(title: str, y_title: str, x_labels: list[str], lines: list[list[float]]) -> str:
    top = max((v for line in lines for v in line), default=1.0) * 1.1 or 1.0
    body = [
        "```mermaid",
        "xychart-beta",
        f'    title "{title}"',
        f'    x-axis "seconds into the measured window" [{", ".join(x_labels)}]',
        f'    y-axis "{y_title}" 0 --> {top:.3g}',
    ]
    body += [f"    line [{', '.join(f'{v:.3g}' for v in line)}]" for line in lines]
    body.append("```")
    return "\n".join(body)


def mermaid_charts(candidate_dir: Path, baseline_dir: Path | None) -> str:
    """p95 latency and throughput over time as Mermaid charts (first line: the canary)."""
    tracks = [("canary", candidate_dir)] + ([("baseline", baseline_dir)] if baseline_dir else [])
    series = {name: _series(path) for name, path in tracks}
    ends = [float(t.max()) for t, _ in series.values() if t.size]
    if not ends:
        return ""
    width = max(max(ends) / MERMAID_POINTS, 1.0)  # seconds per point
    buckets = int(max(ends) // width) + 1
    labels = [f"{i * width:.0f}" for i in range(buckets)]
    latency_lines: list[list[float]] = []
    rate_lines: list[list[float]] = []
    for t, latency in series.values():
        index = np.floor(t / width).astype(int) if t.size else np.array([], dtype=int)
        latency_lines.append(
            [
                float(np.percentile(latency[index == b], 95)) if np.any(index == b) else 0.0
                for b in range(buckets)
            ]
        )
        rate_lines.append([float(np.sum(index == b)) / width for b in range(buckets)])
    names = " and ".join(name for name, _ in tracks)
    legend = "first line canary, second baseline" if baseline_dir else "canary"
    return "\n\n".join(
        [
            f"Latency and throughput over time ({names}; {legend}):",
            _mermaid("p95 latency (ms)", "ms", labels, latency_lines),
            _mermaid("completed requests / s", "req/s", labels, rate_lines),
        ]
    )
