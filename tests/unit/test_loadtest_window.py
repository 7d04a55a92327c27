"""How the runner turns Locust's per-request rows into per-track results (no Locust here:
the rows are constructed, so the window and saturation rules can be checked exactly)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from scripts.loadtest.runner import LoadTestRequest, analyse
from scripts.model_spec import LoadProfile
from tests.conftest import CLIResult, free_port

HEADER = "t,track,endpoint,latency_ms,service_ms,ok,status,lag_ms\n"


def _write(
    raw: Path,
    start: float,
    seconds: float,
    rate: float,
    *,
    lag_ms: float = 0.5,
    send_every: int = 1,
) -> None:
    """Traffic from `start` for `seconds` at `rate`, each answered in 4 ms."""
    raw.mkdir(parents=True, exist_ok=True)
    samples, sends = [HEADER], ["t,track\n"]
    n = int(seconds * rate)
    for i in range(n):
        at = start + i / rate
        if i % send_every == 0:
            sends.append(f"{at:.4f},canary\n")
            samples.append(f"{at + 0.004:.4f},canary,http://x,4.0,3.5,1,200,{lag_ms}\n")
    (raw / "samples-1.csv").write_text("".join(samples))
    (raw / "sent-1.csv").write_text("".join(sends))


def _request(out: Path) -> LoadTestRequest:
    return LoadTestRequest(
        tracks={"canary": ["http://x"]},
        model="m",
        payload={},
        profile=LoadProfile(users=2, rate=20, duration_s=10, warmup_s=3),
        out=out,
    )


def test_the_window_starts_with_traffic_not_with_locusts_launch(tmp_path: Path) -> None:
    launched = 1_000.0
    # Locust took 2.5 s to start sending; then 3 s warm-up + 10 s measured + 2 s tail.
    _write(tmp_path / "raw", launched + 2.5, 15.5, 20)
    result = analyse(_request(tmp_path), tmp_path / "raw", launched, 0.1, "", cpu_warning=False)[
        "canary"
    ]
    assert result.samples == 200  # exactly 10 s at 20 req/s, warm-up and tail excluded
    assert result.achieved_rate == 20
    assert not result.saturated


def test_a_generator_that_sent_too_little_or_too_late_is_saturated(tmp_path: Path) -> None:
    _write(tmp_path / "raw", 1_000.0, 15, 20, send_every=2, lag_ms=250)
    result = analyse(_request(tmp_path), tmp_path / "raw", 1_000.0, 0.95, "", cpu_warning=False)[
        "canary"
    ]
    assert result.saturated
    reasons = " ".join(result.saturation_reasons)
    assert "95% of its CPU" in reasons
    assert "late (p99)" in reasons
    assert "sent 10.0 req/s of the 20.0 targeted" in reasons


def test_an_endpoint_this_machine_cannot_reach_stops_the_run_before_any_load(
    cli: Callable[..., CLIResult], tmp_path: Path
) -> None:
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    result = cli(
        "loadtest", "--endpoint", closed, "--model", "digits", "--out", str(tmp_path / "o")
    )
    assert result.exit_code == 14, result.stderr
    assert f"the canary endpoint {closed} does not answer" in result.stderr
    assert "--canary-endpoint" in result.stderr  # the fix names the override
    assert not (tmp_path / "o" / "locust.json").exists()
