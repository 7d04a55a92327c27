"""The bench's report on hand-built results: summary line, Markdown table, Mermaid charts,
size limit, PNGs, bench.json and the comparison of two runs."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest

from scripts.bench.compare import compare
from scripts.bench.cost import choose_winner, overlay_cost
from scripts.bench.prices import load_prices
from scripts.bench.report import (
    CHART_FILES,
    config_digest,
    markdown,
    money,
    percent,
    summary_line,
    write_charts,
    write_report,
)
from scripts.bench.results import SCHEMA, BenchResult, OverlayResult, Shape, Slo, Step
from scripts.errors import ConfigError

REGION = "us-central1"
SLO = Slo(p99_ms=100.0, error_ratio=0.01, min_achieved=0.95)
MERMAID_NUMBER = r"[+-]?(?:\d+(?:\.\d+)?|\.\d+)"  # Mermaid's lexer: no exponents


def step(
    offered: float, p99: float, *, phase: str = "ramp", verdict: str = "", achieved: float = 0.0
) -> Step:
    verdict = verdict or ("pass" if p99 <= SLO.p99_ms else "fail")
    return Step(
        phase=phase,
        offered_rps=offered,
        achieved_rps=achieved or offered * 0.99,
        p50_ms=p99 / 4,
        p95_ms=p99 / 2,
        p99_ms=p99,
        error_ratio=0.001,
        samples=int(offered * 30),
        throttled_ratio=0.02,
        throttling_note="cgroup v2 cpu.stat",
        generator_saturated=verdict == "invalid",
        generator_cpu=0.9 if verdict == "invalid" else 0.4,
        verdict=verdict,
    )


def measured(
    name: str,
    shape: Shape,
    rates_p99: list[tuple[float, float]],
    capacity: float | None,
    spread: float | None,
    *,
    target_rps: float | None = None,
) -> OverlayResult:
    steps = [step(rates_p99[0][0], 5.0, phase="warmup", verdict="warmup")]
    steps += [step(rate, p99) for rate, p99 in rates_p99]
    at = next((s for s in steps if s.offered_rps == capacity and s.passed), None)
    cost = overlay_cost(shape, load_prices(), REGION, capacity, target_rps=target_rps, headroom=0.3)
    return OverlayResult(
        name=name,
        shape=shape,
        steps=steps,
        capacity_rps=capacity,
        at_capacity=at,
        repeats=[at.achieved_rps] * 3 if at else [],
        spread=spread,
        stopped="bisection within 5 %" if capacity else "the start rate failed the SLO",
        cost=cost,
    )


def shape(replicas: int, cpu: float, memory_gib: float, family: str) -> Shape:
    return Shape(
        replicas=replicas,
        cpu=cpu,
        memory_gib=memory_gib,
        intra_op="from request",
        inter_op="2",
        batching=family == "N2",
        machine_family=family,
    )


def result_of(
    overlays: list[OverlayResult], *, config: dict[str, Any] | None = None
) -> BenchResult:
    config = config or {"image": "reg/digits@sha256:aa", "flags": {"quick": False}}
    winner, note = choose_winner(overlays)
    result = BenchResult(
        model="digits",
        image=config["image"],
        target="k8s",
        slo=SLO,
        quick=False,
        prices=load_prices().to_dict(
            used=[(o.shape.machine_family, REGION) for o in overlays if not o.error]
        ),
        overlays=overlays,
        winner=winner,
        winner_note=note,
        summary="",
        config=config,
        config_digest=config_digest(config),
        started=1_700_000_000.0,
        finished=1_700_000_900.0,
        target_rps=1000.0,
    )
    result.summary = summary_line(result)
    return result


def small() -> OverlayResult:
    rates = [(50, 10.0), (100, 20.0), (200, 60.0), (400, 180.0), (300, 90.0)]
    overlay = measured("small", shape(4, 1, 2, "E2"), rates, 300, 0.03, target_rps=1000.0)
    overlay.steps.append(step(800, 900.0, verdict="invalid"))  # generator saturated
    return overlay


def large() -> OverlayResult:
    rates = [(50, 8.0), (100, 12.0), (200, 40.0), (400, 150.0), (280, 95.0)]
    return measured("large", shape(1, 4, 16, "N2"), rates, 280, 0.04, target_rps=1000.0)


def broken() -> OverlayResult:
    return OverlayResult(
        name="broken",
        shape=shape(2, 2, 4, "E2"),
        error="deploy failed: ImagePullBackOff | registry said 404",
    )


@pytest.fixture
def result() -> BenchResult:
    return result_of([small(), large(), broken()])


def mermaid_blocks(text: str) -> list[str]:
    return re.findall(r"```mermaid\n(.*?)```", text, flags=re.S)


def check_xychart(block: str) -> None:
    """What Mermaid's xychart grammar needs: header, axes, and series as long as the axis."""
    lines = block.strip().splitlines()
    assert lines[0] == "xychart-beta"
    assert re.fullmatch(r'    title "[^"]+"', lines[1])
    x_axis = re.fullmatch(r'    x-axis "[^"]+" \[("[^"]*"(?:, "[^"]*")*)\]', lines[2])
    assert x_axis, lines[2]
    categories = re.findall(r'"([^"]*)"', x_axis.group(1))
    assert len(set(categories)) == len(categories)  # a band axis merges equal labels
    assert re.fullmatch(rf'    y-axis "[^"]+" {MERMAID_NUMBER} --> {MERMAID_NUMBER}', lines[3])
    for line in lines[4:]:
        series = re.fullmatch(
            rf'    (line|bar) "[^"]*" \[((?:{MERMAID_NUMBER}, )*{MERMAID_NUMBER})\]', line
        )
        assert series, line
        assert len(series.group(2).split(", ")) == len(categories)


# --- summary line ----------------------------------------------------------------------


def test_summary_names_winner_price_margin_runner_up_and_slo(result: BenchResult) -> None:
    by_name = {o.name: o for o in result.overlays}
    assert result.winner is not None
    winner = by_name[result.winner]
    runner_up = by_name[({"small", "large"} - {result.winner}).pop()]
    assert winner.cost and runner_up.cost
    assert winner.cost.per_million is not None and runner_up.cost.per_million is not None
    cheaper = (runner_up.cost.per_million - winner.cost.per_million) / runner_up.cost.per_million
    assert summary_line(result) == (
        f"{winner.name} serves 1M requests for {money(winner.cost.per_million)}, "
        f"{percent(cheaper)} cheaper than {runner_up.name}, under p99 ≤ 100 ms"
    )


def test_summary_without_a_clear_winner() -> None:
    a, b = small(), large()
    a.spread = b.spread = 0.5  # wider than any difference here
    result = result_of([a, b])
    assert result.winner is None
    assert result.summary.startswith("No clear winner under p99 ≤ 100 ms: ")
    assert "within their measured spread" in result.summary


def test_summary_when_no_overlay_met_the_slo() -> None:
    failing = measured("slow", shape(1, 1, 2, "E2"), [(10, 500.0), (20, 900.0)], None, None)
    result = result_of([failing, broken()])
    assert result.summary == f"No overlay met the SLO ({SLO.describe()})"
    assert "No overlay met the SLO: nothing to price." in markdown(result)


def test_summary_when_only_one_met_the_slo() -> None:
    failing = measured("slow", shape(1, 1, 2, "E2"), [(10, 500.0), (20, 900.0)], None, None)
    result = result_of([large(), failing])
    assert result.summary.startswith("large serves 1M requests for $")
    assert result.summary.endswith("the only overlay that met the SLO")


# --- Markdown ----------------------------------------------------------------------------


def test_markdown_has_summary_slo_table_and_winner_note(result: BenchResult) -> None:
    text = markdown(result)
    assert result.summary in text
    assert SLO.describe() in text
    header = next(line for line in text.splitlines() if line.startswith("| overlay |"))
    columns = [c.strip() for c in header.strip("|").split("|")]
    assert columns == [
        "overlay",
        "replicas × vCPU",
        "intra/inter-op",
        "batching",
        "capacity (req/s at the SLO)",
        "p50/p95/p99 at capacity (ms)",
        "error %",
        "throttled %",
        "$/h",
        "$/1M",
        "spread (±%)",
        "winner",
    ]
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    assert len(rows) == 3
    assert all(row.count(" | ") == len(columns) - 1 for row in rows)  # no stray pipes
    winner_row = next(row for row in rows if f"`{result.winner}`" in row)
    assert winner_row.rstrip().endswith("🏆 |")
    assert result.winner_note in text
    assert "not in any overlay's $/h or $/1M" in text  # the cluster fee, reported apart


def test_a_failed_overlay_is_in_the_table_with_its_error(result: BenchResult) -> None:
    row = next(line for line in markdown(result).splitlines() if line.startswith("| `broken`"))
    assert "error: deploy failed: ImagePullBackOff \\| registry said 404" in row


def test_mermaid_charts_are_plausible_xycharts(result: BenchResult) -> None:
    blocks = mermaid_blocks(markdown(result))
    measured_overlays = [o for o in result.overlays if not o.error]
    # p99 and achieved per measured overlay, and one cost chart.
    assert len(blocks) == 2 * len(measured_overlays) + 1
    for block in blocks:
        check_xychart(block)
    small_p99 = blocks[0]
    # The invalid step (800 req/s) and the warm-up are left out; the rates are in order.
    assert '["50", "100", "200", "300", "400"]' in small_p99
    assert 'line "SLO 100 ms" [100, 100, 100, 100, 100]' in small_p99
    assert "1 invalid step(s) left out" in markdown(result)
    cost_chart = blocks[-1]
    assert "bar" in cost_chart and "🏆" in cost_chart


def test_tiny_and_huge_numbers_never_use_exponents() -> None:
    tiny = measured("tiny", shape(1, 0.25, 0.5, "E2"), [(1e-4, 1e-5), (2e-4, 2e-5)], None, None)
    huge = measured("huge", shape(1, 1, 2, "E2"), [(1e6, 1e7), (2e6, 3e7)], None, None)
    for block in mermaid_blocks(markdown(result_of([tiny, huge]))):
        check_xychart(block)
        assert "e-" not in block and "e+" not in block


def test_charts_that_do_not_fit_are_left_out_whole(result: BenchResult) -> None:
    url = "https://github.com/o/r/actions/runs/1#artifacts"
    full = markdown(result, artifact_url=url)
    limit = full.index("#### Achieved against offered rate") + 500  # room for the p99 charts
    text = markdown(result, artifact_url=url, limit=limit)
    assert len(text) <= limit
    assert "Truncated" not in text  # nothing cut mid-line
    assert "more chart part(s) left out" in text and url in text
    blocks = mermaid_blocks(text)
    assert blocks  # the first charts are kept ...
    for block in blocks:  # ... each one whole
        check_xychart(block)
    assert len(blocks) < len(mermaid_blocks(full))


def test_markdown_fits_a_small_limit_and_points_to_the_artifact(result: BenchResult) -> None:
    url = "https://github.com/o/r/actions/runs/1#artifacts"
    limit = 1500  # less than the table and notes
    text = markdown(result, artifact_url=url, limit=limit)
    assert len(text) <= limit
    assert "Truncated" in text and url in text
    assert text.count("```") % 2 == 0  # no code block left open
    assert result.summary in text  # the most useful part comes first
    in_bytes = markdown(result, artifact_url=url, limit=limit, in_bytes=True)
    assert len(in_bytes.encode("utf-8")) <= limit  # a check run's summary counts bytes


# --- files -------------------------------------------------------------------------------


def test_pngs_are_written_and_non_empty(result: BenchResult, tmp_path: Path) -> None:
    paths = write_charts(result, tmp_path)
    assert [p.name for p in paths] == list(CHART_FILES.values())
    for path in paths:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert path.stat().st_size > 1000


def test_pngs_are_written_even_when_nothing_met_the_slo(tmp_path: Path) -> None:
    failing = measured("slow", shape(1, 1, 2, "E2"), [(10, 500.0), (20, 900.0)], None, None)
    paths = write_charts(result_of([failing]), tmp_path)
    assert all(p.stat().st_size > 0 for p in paths)


def test_write_report_round_trips_bench_json(result: BenchResult, tmp_path: Path) -> None:
    paths = write_report(result, tmp_path / "out")
    assert set(paths) == {"json", "markdown", *CHART_FILES}
    data = json.loads(paths["json"].read_text())
    assert data["schema"] == SCHEMA
    assert BenchResult.from_dict(data).to_dict() == result.to_dict()
    report = paths["markdown"].read_text()
    assert result.summary in report
    assert all(f"]({name})" in report for name in CHART_FILES.values())
    assert not list((tmp_path / "out").glob(".*.partial"))  # atomic writes leave nothing


def test_config_digest_is_canonical() -> None:
    a = {"image": "x", "flags": {"b": 1, "a": [1, 2]}}
    b = {"flags": {"a": [1, 2], "b": 1}, "image": "x"}
    assert config_digest(a) == config_digest(b)
    assert config_digest(a) != config_digest({**a, "image": "y"})
    assert re.fullmatch(r"[0-9a-f]{64}", config_digest(a))


# --- compare -----------------------------------------------------------------------------


def test_compare_reports_capacity_and_configuration_changes(result: BenchResult) -> None:
    old = result.to_dict()
    new = copy.deepcopy(old)
    new["config"]["image"] = "reg/digits@sha256:bb"
    new["config_digest"] = config_digest(new["config"])
    row = next(o for o in new["overlays"] if o["name"] == "large")
    before = row["capacity_rps"]
    row["capacity_rps"] = before * 1.5
    combined = 2 * row["spread"]
    assert combined < 0.5  # the change is bigger than the spreads: significant
    new["overlays"] = [o for o in new["overlays"] if o["name"] != "broken"]
    text = compare(old, new)
    assert f"digest {old['config_digest'][:12]} → {new['config_digest'][:12]}" in text
    assert "config.image: 'reg/digits@sha256:aa' → 'reg/digits@sha256:bb'" in text
    large_part = text.split("- large:")[1].split("\n- ")[0]
    assert f"capacity (req/s): {before:.4g} → {before * 1.5:.4g} (+50.0%; significant" in large_part
    small_part = text.split("- small:")[1].split("\n- ")[0]
    assert "(+0.0%; within spread" in small_part
    assert "Removed: broken" in text
    assert "Winner: unchanged" in text


def test_compare_same_configuration(result: BenchResult) -> None:
    data = result.to_dict()
    assert f"Configuration: same (digest {result.config_digest[:12]})" in compare(data, data)


def test_compare_refuses_a_file_of_another_schema(result: BenchResult) -> None:
    other = {**result.to_dict(), "schema": "tf-release-pipeline/run/v1"}
    with pytest.raises(ConfigError, match="not a bench result"):
        compare(other, result.to_dict())
    with pytest.raises(ConfigError, match="new file"):
        compare(result.to_dict(), {"overlays": []})
