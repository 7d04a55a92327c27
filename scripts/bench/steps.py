"""One step of the capacity search: an offered rate, measured and judged against the SLO.

Each step is its own open-loop load test (the runner's, or the generator Job's on
Kubernetes), sent at one overlay's Service as the ``canary`` track of the load test
(the overlay under test; the locustfiles know two track names). The verdict:

* ``invalid`` — the run broke, the generator saturated (its CPU, its schedule, or
  the rate it managed to send), or too few samples: it measured the generator, so
  it is never a pass;
* ``fail`` — p99 above the SLO, errors above the SLO, or less than ``min_achieved``
  of the offered rate answered;
* ``pass`` otherwise.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scripts.bench.results import Slo, Step
from scripts.bench.throttling import UNKNOWN, Counters, ThrottlingProbe
from scripts.errors import LoadGeneratorError
from scripts.loadtest.results import TrackResult
from scripts.loadtest.runner import LoadTestRequest
from scripts.log import log
from scripts.model_spec import LoadProfile

TRACK = "canary"  # the locustfiles' name for "the endpoints under test"
MIN_SAMPLES = 30
RATE_PER_USER = 50.0  # open-loop users only pace; more of them spread the sends


@dataclass(frozen=True)
class StepTiming:
    warmup_s: float  # per step, unmeasured: the queue reaches its steady state
    duration_s: float  # measured
    recover_s: float = 60.0  # after a failed step, how long to wait for the server to drain

    @staticmethod
    def for_mode(quick: bool) -> StepTiming:
        if quick:
            return StepTiming(warmup_s=1.0, duration_s=4.0, recover_s=30.0)
        return StepTiming(warmup_s=3.0, duration_s=15.0, recover_s=60.0)


PROBE_RPS = 5.0  # the recovery probe's rate: light enough never to load the server
PROBE_S = 2.0


Generator = Callable[[LoadTestRequest], dict[str, TrackResult]]


def judge(result: TrackResult, slo: Slo, offered: float) -> tuple[str, list[str]]:
    if result.broken:
        return "invalid", [f"the load test broke: {result.broken}"]
    if result.saturated:
        return "invalid", [f"generator saturated: {'; '.join(result.saturation_reasons)}"]
    if result.samples < MIN_SAMPLES:
        return "invalid", [f"only {result.samples} samples (< {MIN_SAMPLES})"]
    reasons = []
    p99 = result.latency_ms.get("p99", math.inf)
    if p99 > slo.p99_ms:
        reasons.append(f"p99 {p99:.1f} ms > {slo.p99_ms:g} ms")
    if result.error_ratio > slo.error_ratio:
        reasons.append(f"errors {result.error_ratio:.2%} > {slo.error_ratio:.2%}")
    if result.achieved_rate < slo.min_achieved * offered:
        reasons.append(
            f"answered {result.achieved_rate:.1f} of {offered:.1f} req/s offered "
            f"(< {slo.min_achieved:.0%})"
        )
    return ("fail" if reasons else "pass"), reasons


@dataclass
class StepRunner:
    """``measure(rate, phase)`` for the search: one load test per call."""

    model: str
    endpoints: list[str]
    payload: dict[str, Any] | None
    signature_name: str
    protocol: str
    slo: Slo
    timing: StepTiming
    out: Path
    generator: Generator
    probe: ThrottlingProbe
    processes: int = 1

    def __post_init__(self) -> None:
        self.count = 0
        self.probes = 0  # recovery probes run (load tests that are not steps)
        # A failed or invalid step may leave a backlog; the *next* step waits for it to
        # drain first. Lazily: after a search's last step nothing is measured, so
        # nothing need wait (a bench that ends on a failure ends at once).
        self.backlog = False

    def request(
        self, rate: float, out: Path, warmup_s: float, duration_s: float | None = None
    ) -> LoadTestRequest:
        users = max(2, math.ceil(rate / RATE_PER_USER))
        return LoadTestRequest(
            tracks={TRACK: self.endpoints},
            model=self.model,
            payload=self.payload,
            signature_name=self.signature_name,
            profile=LoadProfile(
                users=users,
                rate=rate,
                duration_s=duration_s or self.timing.duration_s,
                warmup_s=warmup_s,
            ),
            out=out,
            processes=self.processes,
            protocol=self.protocol,
        )

    def __call__(self, rate: float, phase: str) -> Step:
        if self.backlog:
            self.backlog = False
            self.recover()
        self.count += 1
        out = self.out / f"step-{self.count:02d}-{phase}-{rate:.0f}"
        warmup = self.timing.warmup_s * (3 if phase == "warmup" else 1)
        started = time.time()
        before = self._counters()
        try:
            result = self.generator(self.request(rate, out, warmup))[TRACK]
        except LoadGeneratorError as exc:
            return self._invalid(phase, rate, started, f"the generator failed: {exc.what}")
        throttled, note = self._counters().ratio_since(before)
        verdict, reasons = judge(result, self.slo, rate)
        if phase == "warmup" and verdict != "invalid":
            verdict = "warmup"
        step = Step(
            phase=phase,
            offered_rps=rate,
            achieved_rps=result.achieved_rate,
            p50_ms=result.latency_ms.get("p50", math.nan),
            p95_ms=result.latency_ms.get("p95", math.nan),
            p99_ms=result.latency_ms.get("p99", math.nan),
            error_ratio=result.error_ratio,
            samples=result.samples,
            throttled_ratio=throttled,
            throttling_note=note,
            generator_saturated=result.saturated,
            generator_cpu=result.generator_cpu,
            verdict=verdict,
            reasons=reasons,
            started=started,
            seconds=time.time() - started,
        )
        self._log(step)
        self.backlog = verdict in ("fail", "invalid")
        return step

    def recover(self) -> bool:
        """Wait until the server has drained what an overloaded step left queued.

        A server keeps working through requests its clients gave up on (TF Serving does
        not cancel them): the next step would measure that backlog, not its own rate.
        Light probes (PROBE_RPS for PROBE_S) run until one meets the SLO, for at most
        ``timing.recover_s``; they are logged, never judged as steps."""
        deadline = time.monotonic() + self.timing.recover_s
        probes = 0
        while time.monotonic() < deadline:
            probes += 1
            self.probes += 1
            out = self.out / f"step-{self.count:02d}-recover-{probes}"
            request = self.request(PROBE_RPS, out, 0.0, PROBE_S)
            try:
                result = self.generator(request)[TRACK]
            except LoadGeneratorError as exc:
                log.warning("  recovery probe failed: %s", exc.what)
                continue
            p99 = result.latency_ms.get("p99", math.inf)
            if (
                result.samples
                and p99 <= self.slo.p99_ms
                and result.error_ratio <= self.slo.error_ratio
            ):
                log.info("  recovered after %d probe(s): p99 %.1f ms at %g req/s", probes, p99,
                         PROBE_RPS)  # fmt: skip
                return True
        log.warning(
            "  the server did not recover within %.0f s (%d probes): the next step may "
            "measure its backlog",
            self.timing.recover_s,
            probes,
        )
        return False

    def _log(self, step: Step) -> None:
        throttled = step.throttled_ratio
        log.info(
            "  %-6s %8.1f req/s → %8.1f answered, p99 %7.1f ms, errors %.2f%%, throttled %s: %s%s",
            step.phase,
            step.offered_rps,
            step.achieved_rps,
            step.p99_ms,
            100 * step.error_ratio,
            "?" if throttled is None else f"{throttled:.0%}",
            step.verdict,
            f" ({'; '.join(step.reasons)})" if step.reasons else "",
        )

    def _counters(self) -> Counters:
        try:
            return self.probe.read()
        except Exception as exc:  # noqa: BLE001 - throttling is diagnosis, never a failure
            return Counters(0, 0, 0, f"throttling unreadable: {exc}")

    def _invalid(self, phase: str, rate: float, started: float, reason: str) -> Step:
        log.warning("  %-6s %8.1f req/s: invalid (%s)", phase, rate, reason)
        self.backlog = True
        return Step(
            phase=phase,
            offered_rps=rate,
            achieved_rps=0.0,
            p50_ms=math.nan,
            p95_ms=math.nan,
            p99_ms=math.nan,
            error_ratio=0.0,
            samples=0,
            throttled_ratio=None,
            throttling_note=UNKNOWN.note,
            generator_saturated=True,
            generator_cpu=0.0,
            verdict="invalid",
            reasons=[reason],
            started=started,
            seconds=time.time() - started,
        )
