"""What a benchmark measured: steps → one overlay's capacity → the whole run.

Every other bench module reads or writes these. ``BenchResult.to_dict()`` is the
JSON contract (``bench.json``): ``overlays`` is a list of rows, each with at least
``name``, ``capacity_rps``, ``p99_ms``, ``cost_per_hour``, ``cost_per_million``,
``throttled_ratio`` and ``spread``; ``winner`` holds an overlay name or null.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

SCHEMA = "tf-release-pipeline/bench/v1"


def _finite(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


@dataclass(frozen=True)
class Slo:
    """What "serves" means: p99 at most ``p99_ms``, errors at most ``error_ratio``, and
    at least ``min_achieved`` of the offered rate answered."""

    p99_ms: float = 100.0
    error_ratio: float = 0.01
    min_achieved: float = 0.95

    def describe(self) -> str:
        return f"p99 ≤ {self.p99_ms:g} ms, errors ≤ {self.error_ratio:.2%}"


@dataclass(frozen=True)
class Shape:
    """An overlay's stable track as rendered: what it costs and how it is tuned."""

    replicas: int
    cpu: float  # vCPU requested per replica
    memory_gib: float  # memory requested per replica
    intra_op: str  # "from request" (Downward API), a number, or "default"
    inter_op: str
    batching: bool
    machine_family: str  # E2, N2, ... (the price table's key)
    node_selector: dict[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        return f"{self.replicas} × {self.cpu:g} vCPU"


@dataclass
class Step:
    """One offered rate, measured."""

    phase: str  # warmup | ramp | bisect | repeat
    offered_rps: float
    achieved_rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    error_ratio: float
    samples: int
    throttled_ratio: float | None  # Δnr_throttled / Δnr_periods over the step; None: unknown
    throttling_note: str  # where the counters came from, or why they are missing
    generator_saturated: bool
    generator_cpu: float
    verdict: str  # pass | fail | invalid (saturated generator: never a pass) | warmup
    reasons: list[str] = field(default_factory=list)  # why it failed or is invalid
    started: float = 0.0  # unix time
    seconds: float = 0.0  # wall time the step took, deploys excluded

    @property
    def passed(self) -> bool:
        return self.verdict == "pass"

    def to_dict(self) -> dict[str, Any]:
        """NaN (nothing measured) becomes null: bench.json stays strict JSON."""
        return {k: _finite(v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Step:
        values = dict(data)
        for key in ("p50_ms", "p95_ms", "p99_ms"):
            if values.get(key) is None:
                values[key] = math.nan
        return cls(**values)


@dataclass
class Cost:
    per_hour: float  # $/h for the overlay's replicas (or node pool)
    per_million: float | None  # $ per 1M requests at capacity; None without capacity
    replicas_for_target: int | None  # replicas for the target load with headroom
    breakdown: str  # e.g. "4 × (3.5 vCPU × $0.0218 + 5.5 GiB × $0.0029)"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class OverlayResult:
    name: str
    shape: Shape
    steps: list[Step] = field(default_factory=list)
    capacity_rps: float | None = None  # highest offered rate meeting the SLO; None: none did
    lower_bound: bool = False  # the generator saturated first: capacity is at least this
    at_capacity: Step | None = None  # the median repeat at capacity
    repeats: list[float] = field(default_factory=list)  # achieved rps of each repeat
    spread: float | None = None  # relative uncertainty of capacity_rps (0.05 = ±5 %)
    stopped: str = ""  # why the search ended
    cost: Cost | None = None
    error: str = ""  # the overlay could not be measured (deploy failed, ...)
    recovery_probes: int = 0  # light load tests run while a server drained its backlog
    overlay: str = ""  # the overlay measured ("" before bases: the name)
    base: str | None = None  # the serving base it ran on (`bench --bases`)
    cost_note: str = ""  # why it has no cost (no price for its family or region)

    def row(self) -> dict[str, Any]:
        """The report's row (and the JSON contract's keys)."""
        at = self.at_capacity
        return {
            "name": self.name,
            "overlay": self.overlay or self.name,
            "base": self.base,
            "cost_note": self.cost_note,
            "replicas": self.shape.replicas,
            "cpu": self.shape.cpu,
            "memory_gib": self.shape.memory_gib,
            "intra_op": self.shape.intra_op,
            "inter_op": self.shape.inter_op,
            "batching": self.shape.batching,
            "machine_family": self.shape.machine_family,
            "capacity_rps": self.capacity_rps,
            "capacity_lower_bound": self.lower_bound,
            "p50_ms": at.p50_ms if at else None,
            "p95_ms": at.p95_ms if at else None,
            "p99_ms": at.p99_ms if at else None,
            "error_ratio": at.error_ratio if at else None,
            "throttled_ratio": at.throttled_ratio if at else None,
            "cost_per_hour": self.cost.per_hour if self.cost else None,
            "cost_per_million": self.cost.per_million if self.cost else None,
            "replicas_for_target": self.cost.replicas_for_target if self.cost else None,
            "spread": self.spread,
            "repeats": self.repeats,
            "stopped": self.stopped,
            "error": self.error,
            "recovery_probes": self.recovery_probes,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.row(),
            "shape": asdict(self.shape),
            "cost": self.cost.to_dict() if self.cost else None,
            "at_capacity": self.at_capacity.to_dict() if self.at_capacity else None,
            "steps": [s.to_dict() for s in self.steps],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OverlayResult:
        return cls(
            name=data["name"],
            shape=Shape(**data["shape"]),
            steps=[Step.from_dict(s) for s in data.get("steps", [])],
            capacity_rps=data.get("capacity_rps"),
            lower_bound=bool(data.get("capacity_lower_bound", False)),
            at_capacity=Step.from_dict(data["at_capacity"]) if data.get("at_capacity") else None,
            repeats=list(data.get("repeats", [])),
            spread=data.get("spread"),
            stopped=data.get("stopped", ""),
            cost=Cost(**data["cost"]) if data.get("cost") else None,
            error=data.get("error", ""),
            recovery_probes=int(data.get("recovery_probes", 0)),
            overlay=data.get("overlay") or data["name"],
            base=data.get("base"),
            cost_note=data.get("cost_note", ""),
        )


@dataclass
class BenchResult:
    model: str
    image: str
    target: str  # k8s | local
    slo: Slo
    quick: bool
    prices: dict[str, Any]  # the price table used: version, region, source, date
    overlays: list[OverlayResult]
    winner: str | None  # cheapest per 1M requests meeting the SLO, by more than the spreads
    winner_note: str  # why there is (or is no) winner
    summary: str  # the one-line summary
    config: dict[str, Any]  # what makes two runs comparable: image, flags, node shapes
    config_digest: str  # sha256 of ``config`` (canonical JSON)
    started: float
    finished: float
    target_rps: float | None = None  # the load `replicas_for_target` is sized for
    headroom: float = 0.3

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "model": self.model,
            "image": self.image,
            "target": self.target,
            "slo": asdict(self.slo),
            "quick": self.quick,
            "prices": self.prices,
            "overlays": [o.to_dict() for o in self.overlays],
            "winner": self.winner,
            "winner_note": self.winner_note,
            "summary": self.summary,
            "config": self.config,
            "config_digest": self.config_digest,
            "started": self.started,
            "finished": self.finished,
            "target_rps": self.target_rps,
            "headroom": self.headroom,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BenchResult:
        return cls(
            model=data["model"],
            image=data["image"],
            target=data["target"],
            slo=Slo(**data["slo"]),
            quick=data["quick"],
            prices=data["prices"],
            overlays=[OverlayResult.from_dict(o) for o in data["overlays"]],
            winner=data.get("winner"),
            winner_note=data.get("winner_note", ""),
            summary=data.get("summary", ""),
            config=data.get("config", {}),
            config_digest=data.get("config_digest", ""),
            started=data.get("started", 0.0),
            finished=data.get("finished", 0.0),
            target_rps=data.get("target_rps"),
            headroom=data.get("headroom", 0.3),
        )
