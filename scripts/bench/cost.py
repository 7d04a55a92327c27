"""The cost model: what an overlay costs an hour, per million requests, and who wins.

What is priced
    The resources an overlay's stable track *requests*: ``$/h = replicas × (vCPU × $/vCPU-h
    + GiB × $/GiB-h)`` at the price table's rates for the overlay's machine family and
    region. That is how GKE Autopilot bills (Pod requests, at Autopilot's own per-resource
    rates: put them in a ``--prices`` file as their own family to use them). On GKE
    Standard the bill is the node pool's machines, whatever the Pods request; the figure
    here is then the share of those machines the overlay's requests occupy — what it costs
    when the pool is packed with such Pods, a lower bound when nodes sit partly empty. The
    same per-resource rates price a whole node (``n2-standard-4`` = 4 vCPU + 16 GiB), so an
    overlay sized to fill its nodes is priced exactly.

What is not
    The GKE cluster management fee ($0.10/h per cluster) is paid once per cluster whatever
    runs in it, so it is reported beside the table and never added to an overlay: adding
    it per overlay would penalise small overlays for a cost that does not scale with them.
    Disks, egress, load balancers, discounts (sustained/committed use, Spot) are left out;
    they are alike across overlays of one model, so the comparison stands.

Per request
    ``$/1M = $/h ÷ (capacity req/s × 3600) × 10⁶``: the cost of a million requests when the
    overlay runs at the highest rate that met the SLO. Without a capacity there is none.

The winner
    The cheapest per million requests among overlays that met the SLO, declared only when
    it is cheaper than the runner-up by more than their measured spreads together (the
    spread is the relative uncertainty of capacity, hence of $/1M): a difference the
    repeats cannot tell from noise names no winner.
"""

from __future__ import annotations

import math

from scripts.bench.prices import PriceTable
from scripts.bench.results import Cost, OverlayResult, Shape
from scripts.errors import UsageError

# ceil() of a ratio computed in floating point: 130.00000000000003 must count as 130.
_CEIL_DIGITS = 9


def per_million(per_hour: float, capacity_rps: float | None) -> float | None:
    """Dollars per 10⁶ requests at ``capacity_rps``; None without a (positive) capacity."""
    if not capacity_rps or capacity_rps <= 0:
        return None
    return per_hour / (capacity_rps * 3600) * 1e6


def replicas_for(target_rps: float, capacity_rps: float, replicas: int, headroom: float) -> int:
    """Replicas of this shape that serve ``target_rps`` with ``headroom`` to spare.

    Capacity is assumed to scale linearly with replicas (each serves ``capacity /
    replicas``): true behind a Service's load balancing until something shared saturates.
    """
    per_replica = capacity_rps / replicas
    needed = target_rps * (1 + headroom) / per_replica
    return max(1, math.ceil(round(needed, _CEIL_DIGITS)))


def overlay_cost(
    shape: Shape,
    table: PriceTable,
    region: str,
    capacity_rps: float | None,
    *,
    target_rps: float | None,
    headroom: float,
) -> Cost:
    """The overlay's $/h (requests × rates), $/1M at capacity and replicas for the target.

    Raises ConfigError when the family or region has no price, UsageError for a negative
    headroom or a non-positive target.
    """
    if headroom < 0:
        raise UsageError(f"headroom must be 0 or more, not {headroom}", fix="pass e.g. 0.3")
    if target_rps is not None and target_rps <= 0:
        raise UsageError(
            f"the target load must be positive, not {target_rps} req/s",
            fix="pass --target-rps with a rate above 0, or leave it out",
        )
    family, priced_region, price = table.lookup(shape.machine_family, region)
    per_replica = shape.cpu * price.vcpu_hour + shape.memory_gib * price.gib_hour
    per_hour = shape.replicas * per_replica
    breakdown = (
        f"{shape.replicas} × ({shape.cpu:g} vCPU × ${price.vcpu_hour:.6g}/vCPU-h + "
        f"{shape.memory_gib:g} GiB × ${price.gib_hour:.6g}/GiB-h) = ${per_hour:.4g}/h "
        f"({family}, {priced_region}, prices {table.version})"
    )
    return Cost(
        per_hour=per_hour,
        per_million=per_million(per_hour, capacity_rps),
        replicas_for_target=(
            replicas_for(target_rps, capacity_rps, shape.replicas, headroom)
            if target_rps is not None and capacity_rps and capacity_rps > 0
            else None
        ),
        breakdown=breakdown,
    )


def priced(overlays: list[OverlayResult]) -> list[tuple[float, OverlayResult]]:
    """($/1M, overlay) for the overlays that met the SLO and have a price, cheapest first."""
    ranked = [
        (o.cost.per_million, o)
        for o in overlays
        if not o.error and o.capacity_rps and o.cost is not None and o.cost.per_million is not None
    ]
    return sorted(ranked, key=lambda pair: (pair[0], pair[1].name))


def margin(best: float, runner_up: float) -> float:
    """How much cheaper ``best`` is per 1M requests, relative to the runner-up's price."""
    return (runner_up - best) / runner_up


def combined_spread(a: OverlayResult, b: OverlayResult) -> float:
    """The two overlays' relative uncertainties added (an unknown spread counts as 0)."""
    return (a.spread or 0.0) + (b.spread or 0.0)


def choose_winner(overlays: list[OverlayResult]) -> tuple[str | None, str]:
    """The overlay cheapest per 1M requests under the SLO, if clearly so, and why.

    Returns (name, note) or (None, note); the note is one sentence for the report.
    """
    met = [o for o in overlays if not o.error and o.capacity_rps]
    ranked = priced(overlays)
    if not met:
        return None, "no overlay met the SLO"
    if not ranked:
        names = ", ".join(o.name for o in met)
        return None, f"no winner: {names} met the SLO but have no price per 1M requests"
    best_price, best = ranked[0]
    if len(ranked) == 1:
        return best.name, f"{best.name} is the only overlay that met the SLO"
    runner_price, runner_up = ranked[1]
    unbounded = [o.name for _price, o in ranked[1:] if o.lower_bound]
    if unbounded:
        # Their true capacity is higher than measured, so their true $/1M is lower than
        # shown: any of them might beat the cheapest. (The cheapest's own lower bound only
        # makes it cheaper still.)
        return None, (
            f"no clear winner: {best.name} is cheapest as measured, but the capacity of "
            f"{', '.join(unbounded)} is only a lower bound (the load generator saturated "
            "first); rerun with more generator CPU (--workers, --processes)"
        )
    cheaper = margin(best_price, runner_price)
    spread = combined_spread(best, runner_up)
    detail = (
        f"{best.name} ${best_price:.4g}/1M ±{(best.spread or 0):.1%}, "
        f"{runner_up.name} ${runner_price:.4g}/1M ±{(runner_up.spread or 0):.1%}"
    )
    if cheaper > spread:
        return best.name, (
            f"{best.name} is {cheaper:.1%} cheaper per 1M requests than {runner_up.name}, "
            f"more than their combined spread of {spread:.1%} ({detail})"
        )
    return None, (
        f"no clear winner: {best.name} and {runner_up.name} are within their measured "
        f"spread ({detail}; {cheaper:.1%} apart, combined spread {spread:.1%})"
    )
