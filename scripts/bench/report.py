"""The bench's report: one summary line, a Markdown table with Mermaid charts, PNGs, JSON.

The Markdown goes where GitHub shows it (a PR comment, a step summary), so it is kept
within a size limit (``scripts.github.markdown.fit``) with the most useful part first:
summary, SLO, table, winner, notes, then charts. GitHub cannot show images in comments,
so the charts there are Mermaid ``xychart-beta`` blocks; the PNGs (matplotlib) go in the
run's artifact beside ``bench.json`` and ``report.md``.

How the Mermaid charts encode the data, and why: an ``xychart-beta`` has one x-axis for
all its series and a series has one value per x position, with no gaps. A numeric
x-axis does not help: it spreads a series' values evenly from its minimum to its maximum,
whatever rates they were measured at. Overlays are measured at different offered rates,
so a shared axis would need values an overlay was never measured at (interpolated or
invented beyond its last step). Instead the latency and throughput charts are one per
overlay, whose x-axis lists exactly the rates measured (evenly spaced, not to scale, and
titled so), with the SLO and the y = x reference drawn as lines on the same positions.
Invalid steps (generator saturated) and the warm-up are left out there and counted in
the caption; the PNGs draw them hollow. There is no scatter plot, so cost against
capacity is a bar chart of $/1M per overlay, ordered by capacity, each bar labelled with
its capacity.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scripts.atomic import atomic_path, write_text_atomic
from scripts.bench.cost import margin, priced
from scripts.bench.results import BenchResult, OverlayResult, Step
from scripts.github.markdown import fit

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.axis import Axis
    from matplotlib.figure import Figure

COMMENT_LIMIT = 65_000  # under GitHub's 65,536 characters, with room for a sticky marker
REPORT_FILE_LIMIT = 1024 * 1024  # report.md in the artifact: the step summary's limit
WINNER_MARK = "🏆"
CHART_FILES = {
    "p99_vs_offered": "p99-vs-offered.png",
    "achieved_vs_offered": "achieved-vs-offered.png",
    "cost_vs_capacity": "cost-vs-capacity.png",
}
TABLE_HEADER = (
    "| overlay | replicas × vCPU | intra/inter-op | batching | capacity (req/s at the SLO) "
    "| p50/p95/p99 at capacity (ms) | error % | throttled % | $/h | $/1M | spread (±%) "
    "| winner |"
)


def config_digest(config: dict[str, Any]) -> str:
    """sha256 of ``config`` as canonical JSON: equal configurations, equal digests."""
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


# --- numbers as text -------------------------------------------------------------------


def plain(value: float, digits: int = 4) -> str:
    """``value`` to ``digits`` significant digits, never in exponent form.

    Mermaid's number token is ``[+-]?(\\d+(\\.\\d+)?|\\.\\d+)``: ``1e-05`` breaks a chart.
    """
    if value == 0 or not math.isfinite(value):
        return "0"
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(value))))
    text = f"{value:.{min(decimals, 12)}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def money(value: float | None) -> str:
    """Dollars: whole above $100, else 3 significant digits, at least to the cent."""
    if value is None:
        return "—"
    if abs(value) >= 100:
        return f"${value:,.0f}"
    whole, _, cents = plain(value, 3).partition(".")
    return f"${whole}.{cents.ljust(2, '0')}"


def percent(ratio: float | None) -> str:
    """A ratio as a percentage: one decimal under 10 %, none above."""
    if ratio is None:
        return "—"
    value = ratio * 100
    return f"{value:.1f} %" if abs(value) < 10 else f"{value:.0f} %"


def _number(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:,.0f}" if abs(value) >= 1000 else plain(value, 3)


def _cell(text: str, limit: int = 160) -> str:
    """Text safe in a Markdown table cell: one line, no bare pipe, bounded length."""
    flat = " ".join(text.split()).replace("|", "\\|")
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


# --- summary and table -----------------------------------------------------------------


def _slo_short(result: BenchResult) -> str:
    return f"p99 ≤ {result.slo.p99_ms:g} ms"


def summary_line(result: BenchResult) -> str:
    """One sentence: who serves a million requests cheapest under the SLO, and by how much."""
    slo = _slo_short(result)
    ranked = priced(result.overlays)
    if not ranked:
        met = [o.name for o in result.overlays if not o.error and o.capacity_rps]
        if met:
            return f"{', '.join(met)} met {slo}, but none has a price per 1M requests"
        return f"No overlay met the SLO ({result.slo.describe()})"
    winner = next(((pm, o) for pm, o in ranked if o.name == result.winner), None)
    if winner is not None:
        price, best = winner
        others = [(pm, o) for pm, o in ranked if o is not best]
        if not others:
            return (
                f"{best.name} serves 1M requests for {money(price)} under {slo}, "
                "the only overlay that met the SLO"
            )
        runner_price, runner_up = others[0]
        return (
            f"{best.name} serves 1M requests for {money(price)}, "
            f"{percent(margin(price, runner_price))} cheaper than {runner_up.name}, under {slo}"
        )
    if len(ranked) == 1:
        price, only = ranked[0]
        return f"{only.name} serves 1M requests for {money(price)} under {slo}"
    (price_a, a), (price_b, b) = ranked[0], ranked[1]
    return (
        f"No clear winner under {slo}: {a.name} ({money(price_a)}/1M) and {b.name} "
        f"({money(price_b)}/1M) are within their measured spread"
    )


def _latencies(step: Step | None) -> str:
    if step is None:
        return "—"
    return " / ".join(_number(v) for v in (step.p50_ms, step.p95_ms, step.p99_ms))


def _row(overlay: OverlayResult, winner: str | None) -> str:
    shape, at, cost = overlay.shape, overlay.at_capacity, overlay.cost
    if overlay.error:
        capacity = f"💥 error: {_cell(overlay.error)}"
    elif overlay.capacity_rps is None:
        capacity = "none met the SLO"
    else:  # a lower bound: the generator saturated before the overlay did
        capacity = ("≥ " if overlay.lower_bound else "") + _number(overlay.capacity_rps)
    if at is None:
        throttled = "—"
    else:  # None: the counters could not be read (the step's throttling_note says why)
        throttled = "unknown" if at.throttled_ratio is None else percent(at.throttled_ratio)
    name = (
        f"`{_cell(overlay.overlay)}` on `{_cell(overlay.base)}`"
        if overlay.base
        else (f"`{_cell(overlay.name)}`")
    )
    cells = [
        name,
        f"{shape.describe()} ({shape.machine_family})",
        _cell(f"{shape.intra_op}/{shape.inter_op}"),
        "on" if shape.batching else "off",
        capacity,
        _latencies(at),
        percent(at.error_ratio) if at else "—",
        throttled,
        money(cost.per_hour) if cost else "—",
        money(cost.per_million) if cost else "—",
        f"±{percent(overlay.spread)}" if overlay.spread is not None else "—",
        WINNER_MARK if overlay.name == winner else "",
    ]
    return "| " + " | ".join(cells) + " |"


def _table(result: BenchResult) -> list[str]:
    separator = "|" + "---|" * TABLE_HEADER.count(" | ") + "---|"
    return [TABLE_HEADER, separator] + [_row(o, result.winner) for o in result.overlays]


def _notes(result: BenchResult) -> list[str]:
    """Per overlay: how its cost was computed, why its search stopped, its full error."""
    lines: list[str] = []
    for overlay in result.overlays:
        parts = []
        if overlay.error:
            parts.append(f"error: {_cell(overlay.error, 600)}")
        if overlay.stopped:
            parts.append(f"search stopped: {_cell(overlay.stopped, 300)}")
        if overlay.cost_note:
            parts.append(f"no cost: {_cell(overlay.cost_note, 300)}")
        if overlay.cost:
            parts.append(f"cost: {overlay.cost.breakdown}")
            if overlay.cost.replicas_for_target is not None and result.target_rps is not None:
                parts.append(
                    f"{overlay.cost.replicas_for_target} replicas serve "
                    f"{_number(result.target_rps)} req/s with {result.headroom:.0%} headroom"
                )
        if parts:
            lines.append(f"- `{overlay.name}`: " + "; ".join(parts))
    return lines


def _price_lines(result: BenchResult) -> list[str]:
    prices = result.prices
    lines = []
    fee = prices.get("cluster_fee_per_hour")
    if result.target == "k8s" and fee is not None:
        lines.append(
            f"- The cluster management fee ({money(float(fee))}/h per cluster) is paid once "
            "for the cluster, whatever runs in it: it is not in any overlay's $/h or $/1M."
        )
    version = prices.get("version", "?")
    currency = prices.get("currency", "USD")
    override = prices.get("override")
    lines.append(
        f"- Prices: table {version} ({currency}, on-demand list prices"
        + (f", overridden by `{override}`" if override else "")
        + "); $/1M = $/h ÷ (capacity × 3600) × 10⁶."
    )
    for entry in prices.get("entries", []):
        lines.append(
            f"  - {entry.get('family')} {entry.get('region')}: "
            f"${entry.get('vcpu_hour')}/vCPU-h, ${entry.get('gib_hour')}/GiB-h "
            f"({entry.get('date')}): {_cell(str(entry.get('source', '')), 400)}"
        )
    return lines


# --- Mermaid ---------------------------------------------------------------------------


def _quoted(text: str) -> str:
    """A Mermaid string: double quotes delimit it and cannot be escaped, so drop them."""
    return '"' + text.replace('"', "'").replace("\n", " ") + '"'


def _top(values: Sequence[float]) -> float:
    top = max(values, default=1.0) * 1.1
    return top if top > 0 else 1.0


def _xychart(
    title: str,
    x_title: str,
    categories: Sequence[str],
    y_title: str,
    series: Sequence[tuple[str, str, Sequence[float]]],
) -> str:
    """One ``xychart-beta`` block; ``series`` are (``line``|``bar``, name, values)."""
    y_top = _top([v for _, _, values in series for v in values])
    body = [
        "```mermaid",
        "xychart-beta",
        f"    title {_quoted(title)}",
        f"    x-axis {_quoted(x_title)} [{', '.join(_quoted(c) for c in categories)}]",
        f"    y-axis {_quoted(y_title)} 0 --> {plain(y_top)}",
    ]
    body += [
        f"    {kind} {_quoted(name)} [{', '.join(plain(v) for v in values)}]"
        for kind, name, values in series
    ]
    body.append("```")
    return "\n".join(body)


def _labels(rates: Sequence[float]) -> list[str]:
    """Distinct axis labels for distinct rates (more digits until they differ)."""
    for digits in range(3, 9):
        labels = [plain(r, digits) for r in rates]
        if len(set(labels)) == len(labels):
            return labels
    return [f"{plain(r, 8)} #{i + 1}" for i, r in enumerate(rates)]


def chart_steps(overlay: OverlayResult) -> tuple[list[tuple[float, Step]], int]:
    """The steps a chart can show, by offered rate (repeats: the median), and how many
    were left out (invalid: the generator saturated; non-finite figures)."""
    shown: dict[float, list[Step]] = {}
    left_out = 0
    for step in overlay.steps:
        if step.phase == "warmup" or step.verdict == "warmup":
            continue
        figures = (step.offered_rps, step.achieved_rps, step.p99_ms)
        if step.verdict == "invalid" or not all(math.isfinite(v) for v in figures):
            left_out += 1
            continue
        shown.setdefault(step.offered_rps, []).append(step)
    return [(rate, _median_step(steps)) for rate, steps in sorted(shown.items())], left_out


def _median_step(steps: list[Step]) -> Step:
    """The step with the median p99 among those at one rate (an actual measurement)."""
    ordered = sorted(steps, key=lambda s: s.p99_ms)
    return ordered[(len(ordered) - 1) // 2]


def _no_chart(overlay: OverlayResult, left_out: int) -> str:
    if overlay.error:
        return f"`{overlay.name}`: not measured (error), no chart."
    return f"`{overlay.name}`: fewer than 2 valid steps, no chart{_left_out(left_out)}."


def _left_out(count: int) -> str:
    return f"; {count} invalid step(s) left out (generator saturated)" if count else ""


def _latency_charts(result: BenchResult) -> list[str]:
    slo = result.slo.p99_ms
    chunks = [
        "#### p99 latency against offered rate\n\n"
        "_One chart per overlay (Mermaid charts need one x-axis without gaps; overlays are "
        "measured at different rates). The x-axis lists the offered rates measured, evenly "
        f"spaced, not to scale. First line: p99 measured; second: the SLO ({slo:g} ms)._"
    ]
    for overlay in result.overlays:
        points, left_out = chart_steps(overlay)
        if len(points) < 2:
            chunks.append(_no_chart(overlay, left_out))
            continue
        rates = [rate for rate, _ in points]
        chart = _xychart(
            f"{overlay.name}: p99 latency (ms) by offered rate, SLO {slo:g} ms",
            "offered req/s (steps measured, not to scale)",
            _labels(rates),
            "p99 latency (ms)",
            [
                ("line", "p99 measured", [s.p99_ms for _, s in points]),
                ("line", f"SLO {slo:g} ms", [slo] * len(points)),
            ],
        )
        chunks.append(f"`{overlay.name}`: {len(points)} rates{_left_out(left_out)}.\n\n{chart}")
    return chunks


def _throughput_charts(result: BenchResult) -> list[str]:
    floor = result.slo.min_achieved
    chunks = [
        "#### Achieved against offered rate\n\n"
        "_One chart per overlay, x-axis as above. First line: achieved req/s; second: the "
        f"offered rate (y = x, all answered); third: {floor:.0%} of it, the least the SLO "
        "accepts._"
    ]
    for overlay in result.overlays:
        points, left_out = chart_steps(overlay)
        if len(points) < 2:
            chunks.append(_no_chart(overlay, left_out))
            continue
        rates = [rate for rate, _ in points]
        chunks.append(
            _xychart(
                f"{overlay.name}: achieved vs offered (req/s)",
                "offered req/s (steps measured, not to scale)",
                _labels(rates),
                "req/s",
                [
                    ("line", "achieved", [s.achieved_rps for _, s in points]),
                    ("line", "offered (y = x)", rates),
                    ("line", f"{floor:.0%} of offered", [r * floor for r in rates]),
                ],
            )
        )
    return chunks


def _cost_chart(result: BenchResult) -> list[str]:
    ranked = sorted(priced(result.overlays), key=lambda pair: pair[1].capacity_rps or 0.0)
    caption = (
        "#### Cost per 1M requests, by capacity\n\n"
        "_Mermaid has no scatter plot: one bar per overlay that met the SLO, ordered by "
        "capacity (in each label), height the $ per 1M requests at capacity; lower is "
        f"cheaper. {WINNER_MARK} marks the winner._"
    )
    if not ranked:
        return [caption, "No overlay met the SLO: nothing to price."]
    labels = [
        f"{o.name} {_number(o.capacity_rps)} req/s"
        + (f" {WINNER_MARK}" if o.name == result.winner else "")
        for _, o in ranked
    ]
    chart = _xychart(
        "$ per 1M requests at capacity, by overlay (ordered by capacity)",
        "overlay and capacity",
        labels,
        "$ per 1M requests",
        [("bar", "$ per 1M requests", [pm for pm, _ in ranked])],
    )
    return [caption, chart]


def chart_chunks(result: BenchResult) -> list[str]:
    """The three charts as Mermaid blocks with captions, in pieces that stand alone (a
    report that must be cut drops whole pieces, never half a chart)."""
    return [*_latency_charts(result), *_throughput_charts(result), *_cost_chart(result)]


def mermaid_charts(result: BenchResult) -> str:
    return "\n\n".join(chart_chunks(result))


# --- Markdown --------------------------------------------------------------------------

_POINTER_ROOM = 400  # what fit()'s truncation note and the artifact line may take


def _size(text: str, in_bytes: bool) -> int:
    return len(text.encode("utf-8")) if in_bytes else len(text)


def _per_million(overlay: OverlayResult) -> float | None:
    return overlay.cost.per_million if overlay.cost else None


def _ratio(new: float | None, old: float | None) -> str:
    return f"×{new / old:.2f}" if new and old else "—"


def _bases_compared(result: BenchResult) -> list[str]:
    """`--bases`: per overlay, each base against the first, capacity and $/1M side by side;
    a difference within the two runs' combined spread is called so."""
    by_overlay: dict[str, list[OverlayResult]] = {}
    for o in result.overlays:
        if o.base is not None:
            by_overlay.setdefault(o.overlay or o.name, []).append(o)
    lines: list[str] = []
    for overlay, runs in by_overlay.items():
        first = runs[0]
        for other in runs[1:]:
            spread = (first.spread or 0.0) + (other.spread or 0.0)
            change = (
                abs((other.capacity_rps or 0) / first.capacity_rps - 1)
                if first.capacity_rps
                else None
            )
            within = change is not None and change <= spread
            lines.append(
                f"- `{overlay}`: `{other.base}` vs `{first.base}`: capacity "
                f"{_ratio(other.capacity_rps, first.capacity_rps)}, $/1M "
                f"{_ratio(_per_million(other), _per_million(first))}"
                + (
                    f" (within the combined spread ±{percent(spread)}: no clear gain)"
                    if within
                    else ""
                )
            )
    return ["", "**Bases compared** (each against the first named):", *lines] if lines else []


def _head(result: BenchResult, images: Sequence[str]) -> str:
    mode = ", quick" if result.quick else ""
    lines = [
        f"### Bench: `{result.model}` on {result.target}{mode}",
        "",
        f"**{summary_line(result)}**",
        "",
        f"SLO: {result.slo.describe()}, at least {result.slo.min_achieved:.0%} of the offered "
        f"rate answered. Image `{result.image}`; configuration `{result.config_digest[:12]}`.",
        "",
        *_table(result),
        *_bases_compared(result),
        "",
        f"{WINNER_MARK if result.winner else '⚖️'} {result.winner_note}",
        "",
        *_notes(result),
        *_price_lines(result),
    ]
    lines += [f"\n![{Path(image).stem}]({image})" for image in images]
    return "\n".join(lines)


def markdown(
    result: BenchResult,
    *,
    artifact_url: str | None = None,
    limit: int = COMMENT_LIMIT,
    in_bytes: bool = False,
    images: Sequence[str] = (),
) -> str:
    """The report in GitHub Markdown, within ``limit`` characters (``in_bytes``: UTF-8
    bytes, as a check run's summary counts). Charts that do not fit are left out whole
    and counted; a head that does not fit is cut at a line (``fit``). Both point to
    ``artifact_url``. ``images``: PNG paths to embed (for ``report.md``)."""
    tail = f"Full report, PNG charts and `bench.json`: {artifact_url}" if artifact_url else ""
    parts = [_head(result, images)]
    budget = limit - _POINTER_ROOM - _size(tail, in_bytes)
    used = _size(parts[0], in_bytes)
    chunks = chart_chunks(result)
    for index, chunk in enumerate(chunks):
        cost = _size(chunk, in_bytes) + 2
        if used + cost > budget:
            parts.append(
                f"_{len(chunks) - index} more chart part(s) left out to fit GitHub's limit; "
                "every chart is in the run's artifact (PNG)._"
            )
            break
        parts.append(chunk)
        used += cost
    if tail:
        parts.append(tail)
    return fit("\n\n".join(parts) + "\n", limit, in_bytes=in_bytes, more=artifact_url)


# --- PNG charts ------------------------------------------------------------------------


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _measured(overlay: OverlayResult) -> list[Step]:
    steps = [s for s in overlay.steps if s.phase != "warmup" and s.verdict != "warmup"]
    return sorted(steps, key=lambda s: s.offered_rps)


def _wide(values: Sequence[float]) -> bool:
    """Whether positive values span more than 10×: then a log axis reads better."""
    positive = [v for v in values if v > 0]
    return bool(positive) and max(positive) > 10 * min(positive)


def _log_scale(ax: Axes, *, y: bool = False) -> None:
    """Log x (and y) axes labelled 50, 100, 200 (not 5×10¹): rates read as rates."""
    from matplotlib.ticker import LogFormatter

    ax.set_xscale("log")
    axes: list[Axis] = [ax.xaxis]
    if y:
        ax.set_yscale("log")
        axes.append(ax.yaxis)
    for axis in axes:
        axis.set_major_formatter(LogFormatter())
        axis.set_minor_formatter(LogFormatter(labelOnlyBase=False))


def _plot_steps(ax: Axes, overlay: OverlayResult, color: str, y: str) -> None:
    """A line through the valid steps (per-rate medians), every step a marker, invalid
    steps hollow."""
    steps = _measured(overlay)
    if not steps:  # not measured: no empty legend entry
        return
    points, _ = chart_steps(overlay)
    ax.plot(
        [rate for rate, _ in points],
        [getattr(s, y) for _, s in points],
        "-",
        color=color,
        label=overlay.name,
    )
    valid = [s for s in steps if s.verdict != "invalid"]
    invalid = [s for s in steps if s.verdict == "invalid"]
    ax.plot([s.offered_rps for s in valid], [getattr(s, y) for s in valid], "o", color=color, ms=5)
    if invalid:
        ax.plot(
            [s.offered_rps for s in invalid],
            [getattr(s, y) for s in invalid],
            "o",
            mfc="none",
            mec=color,
            ms=7,
        )


def _save(fig: Figure, path: Path) -> Path:
    plt = _pyplot()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path


def _colors(result: BenchResult) -> dict[str, str]:
    palette = [f"C{i}" for i in range(10)]
    return {o.name: palette[i % len(palette)] for i, o in enumerate(result.overlays)}


def _all_offered(result: BenchResult) -> list[float]:
    return [s.offered_rps for o in result.overlays for s in _measured(o)]


def _p99_chart(result: BenchResult, path: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 4.5))
    colors = _colors(result)
    for overlay in result.overlays:
        _plot_steps(ax, overlay, colors[overlay.name], "p99_ms")
        at = overlay.at_capacity
        if overlay.capacity_rps and at is not None:
            ax.plot([overlay.capacity_rps], [at.p99_ms], "*", color=colors[overlay.name], ms=14)
    ax.axhline(
        result.slo.p99_ms, color="tab:red", ls="--", label=f"SLO p99 {result.slo.p99_ms:g} ms"
    )
    if _wide(_all_offered(result)):
        _log_scale(ax)
    ax.set_xlabel("offered rate (req/s)")
    ax.set_ylabel("p99 latency (ms)")
    ax.set_title("p99 latency against offered rate (★ capacity; hollow: generator saturated)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def _achieved_chart(result: BenchResult, path: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 4.5))
    colors = _colors(result)
    for overlay in result.overlays:
        _plot_steps(ax, overlay, colors[overlay.name], "achieved_rps")
    offered = _all_offered(result)
    if offered:
        lo, hi = min(offered), max(offered)
        ax.plot([lo, hi], [lo, hi], color="grey", lw=1, label="y = x (all answered)")
        floor = result.slo.min_achieved
        ax.plot(
            [lo, hi],
            [lo * floor, hi * floor],
            color="grey",
            ls="--",
            lw=1,
            label=f"{floor:.0%} of offered (SLO floor)",
        )
    if _wide(offered):
        _log_scale(ax, y=True)
    ax.set_xlabel("offered rate (req/s)")
    ax.set_ylabel("achieved rate (req/s)")
    ax.set_title("Achieved against offered rate (hollow: generator saturated)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def _cost_png(result: BenchResult, path: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 4.5))
    ranked = priced(result.overlays)
    colors = _colors(result)
    for price, overlay in ranked:
        capacity = overlay.capacity_rps or 0.0
        spread = overlay.spread or 0.0
        winner = overlay.name == result.winner
        ax.errorbar(
            [capacity],
            [price],
            xerr=[capacity * spread],
            yerr=[price * spread],
            fmt="*" if winner else "o",
            ms=18 if winner else 7,
            color=colors[overlay.name],
            mec="black" if winner else colors[overlay.name],
            capsize=3,
        )
        label = f"{overlay.name} (winner)" if winner else overlay.name  # no emoji in DejaVu
        ax.annotate(label, (capacity, price), textcoords="offset points", xytext=(8, 6), fontsize=9)
    shown = {o.name for _, o in ranked}
    missing = [o.name for o in result.overlays if o.name not in shown]
    if not ranked:
        ax.text(
            0.5, 0.5, "no overlay met the SLO", ha="center", va="center", transform=ax.transAxes
        )
    ax.set_xlabel("capacity at the SLO (req/s)")
    ax.set_ylabel(f"{result.prices.get('currency', 'USD')} per 1M requests")
    ax.set_title(
        "Cost per 1M requests against capacity (bars: ± measured spread; lower is cheaper)"
        + (f"\nnot shown (no capacity or price): {', '.join(missing)}" if missing else ""),
        fontsize=10,
    )
    ax.grid(alpha=0.3)
    return _save(fig, path)


def write_charts(result: BenchResult, out_dir: Path) -> list[Path]:
    """``p99-vs-offered.png``, ``achieved-vs-offered.png``, ``cost-vs-capacity.png``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    return [
        _p99_chart(result, out_dir / CHART_FILES["p99_vs_offered"]),
        _achieved_chart(result, out_dir / CHART_FILES["achieved_vs_offered"]),
        _cost_png(result, out_dir / CHART_FILES["cost_vs_capacity"]),
    ]


def write_report(result: BenchResult, out_dir: Path) -> dict[str, Path]:
    """``bench.json``, ``report.md`` and the PNGs in ``out_dir``, each written atomically.

    Returns their paths by kind: ``json``, ``markdown`` and the keys of ``CHART_FILES``.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {"json": out_dir / "bench.json", "markdown": out_dir / "report.md"}
    write_text_atomic(
        paths["json"], json.dumps(result.to_dict(), indent=2, ensure_ascii=False) + "\n"
    )
    charts = write_charts(result, out_dir)
    paths.update(zip(CHART_FILES, charts, strict=True))
    text = markdown(result, limit=REPORT_FILE_LIMIT, images=[c.name for c in charts])
    write_text_atomic(paths["markdown"], text)
    return paths
