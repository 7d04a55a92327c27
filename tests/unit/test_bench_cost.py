"""The bench's cost model: the price table (shipped, overridden, broken), $/h, $/1M,
replicas for a target load, and the winner rule."""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import pytest
import yaml

from scripts.bench.cost import choose_winner, overlay_cost
from scripts.bench.prices import PriceTable, load_prices
from scripts.bench.results import Cost, OverlayResult, Shape
from scripts.errors import ConfigError, UsageError

REGION = "us-central1"


def shape(
    replicas: int = 4, cpu: float = 3.5, memory_gib: float = 5.5, family: str = "E2"
) -> Shape:
    return Shape(
        replicas=replicas,
        cpu=cpu,
        memory_gib=memory_gib,
        intra_op="from request",
        inter_op="2",
        batching=False,
        machine_family=family,
    )


def write_yaml(path: Path, data: object) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def table() -> PriceTable:
    return load_prices()


# --- the shipped table -----------------------------------------------------------------


def test_shipped_table_holds_the_issue_13_figures_with_sources(table: PriceTable) -> None:
    # The Cloud Billing catalog figures quoted in issue 13 (us-central1, on-demand).
    quoted = {"E2": (0.02181159, 0.00292353), "N2": (0.031611, 0.004237)}
    for family, (vcpu, gib) in quoted.items():
        entry = table.price(family, REGION)
        assert (entry.vcpu_hour, entry.gib_hour) == (vcpu, gib)
        assert "issue 13" in entry.source
    assert table.currency == "USD"
    assert table.cluster_fee_per_hour == 0.10
    assert "kubernetes-engine/pricing" in table.cluster_fee_source


def test_local_is_priced_like_e2_in_any_region(table: PriceTable) -> None:
    local, e2 = table.price("local", "nowhere-1"), table.price("E2", REGION)
    assert (local.vcpu_hour, local.gib_hour) == (e2.vcpu_hour, e2.gib_hour)
    assert "E2" in local.source


def test_families_match_whatever_their_case(table: PriceTable) -> None:
    assert table.price("e2", REGION) == table.price("E2", REGION)


def test_an_unpriced_family_or_region_names_what_exists(table: PriceTable) -> None:
    with pytest.raises(ConfigError) as family:
        table.price("C3", REGION)
    assert "C3" in family.value.what
    assert "E2" in family.value.fix and "N2" in family.value.fix
    with pytest.raises(ConfigError) as region:
        table.price("N2", "mars-north1")
    assert "mars-north1" in region.value.what
    assert REGION in region.value.fix


def test_the_report_gets_only_the_entries_used_with_sources_and_dates(
    table: PriceTable,
) -> None:
    data = table.to_dict(used=[("E2", REGION), ("e2", REGION), ("local", "anywhere")])
    assert data["version"] == table.version
    assert [(e["family"], e["region"]) for e in data["entries"]] == [
        ("E2", REGION),
        ("local", "*"),
    ]
    entry = table.price("E2", REGION)
    assert data["entries"][0]["source"] == entry.source
    assert data["entries"][0]["date"] == entry.date.isoformat()


# --- overrides and broken files ----------------------------------------------------------


def test_an_override_replaces_matching_entries_and_adds_new_ones(
    tmp_path: Path, table: PriceTable
) -> None:
    override = write_yaml(
        tmp_path / "prices.yaml",
        {
            "version": "negotiated-2027",
            "cluster_fee_per_hour": 0.0,
            "families": {
                "e2": {  # lower case: still replaces the shipped E2 entry
                    REGION: {
                        "vcpu_hour": 0.02,
                        "gib_hour": 0.002,
                        "source": "our contract",
                        "date": "2027-01-01",
                    }
                },
                "Autopilot": {
                    REGION: {
                        "vcpu_hour": 0.05,
                        "gib_hour": 0.005,
                        "source": "GKE Autopilot pod prices",
                        "date": "2027-01-01",
                    }
                },
            },
        },
    )
    merged = load_prices(override)
    assert merged.version == "negotiated-2027"
    assert merged.cluster_fee_per_hour == 0.0
    assert merged.override == str(override)
    assert merged.price("E2", REGION).vcpu_hour == 0.02
    assert merged.price("E2", REGION).source == "our contract"
    assert sorted(merged.families) == sorted({*table.families, "Autopilot"})  # no "e2" twin
    assert merged.price("Autopilot", REGION).gib_hour == 0.005
    assert merged.price("N2", REGION) == table.price("N2", REGION)  # untouched


def test_an_override_without_a_version_marks_the_shipped_one(
    tmp_path: Path, table: PriceTable
) -> None:
    override = write_yaml(tmp_path / "extra.yaml", {"families": {}})
    merged = load_prices(override)
    assert merged.version == f"{table.version}+extra.yaml"
    assert merged.cluster_fee_per_hour == table.cluster_fee_per_hour


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("families: [unclosed", "not valid YAML"),
        ("- a list", "not a mapping"),
        ("", "not a mapping"),
        (
            "families: {E2: {us-central1: {vcpu_hour: -1, gib_hour: 0.1, source: x, "
            "date: 2027-01-01}}}",
            "vcpu_hour",
        ),
        (
            "families: {E2: {us-central1: {vcpu_hour: 1, gib_hour: 0.1, date: 2027-01-01}}}",
            "source",
        ),
        ("prices: {}", "prices"),  # a misspelt top-level key
        ("currency: EUR", "EUR"),  # would mix currencies
    ],
)
def test_a_bad_override_is_a_config_error_with_a_fix(
    tmp_path: Path, content: str, expected: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    with pytest.raises(ConfigError) as caught:
        load_prices(path)
    assert expected in caught.value.what
    assert str(path) in caught.value.what
    assert caught.value.fix


def test_a_missing_override_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_prices(tmp_path / "absent.yaml")


# --- $/h, $/1M, replicas -----------------------------------------------------------------


def test_cost_per_hour_is_replicas_times_requested_resources(table: PriceTable) -> None:
    entry = table.price("E2", REGION)
    cost = overlay_cost(shape(), table, REGION, None, target_rps=None, headroom=0.3)
    expected = 4 * (3.5 * entry.vcpu_hour + 5.5 * entry.gib_hour)
    assert cost.per_hour == pytest.approx(expected, rel=1e-12)
    assert cost.per_million is None  # no capacity, no price per request
    assert cost.replicas_for_target is None
    assert "4 × (3.5 vCPU" in cost.breakdown and "E2" in cost.breakdown


def test_the_cluster_fee_is_not_added_to_an_overlay(tmp_path: Path) -> None:
    cheap = load_prices(write_yaml(tmp_path / "a.yaml", {"cluster_fee_per_hour": 0.0}))
    dear = load_prices(write_yaml(tmp_path / "b.yaml", {"cluster_fee_per_hour": 5.0}))
    kwargs = {"target_rps": None, "headroom": 0.3}
    assert (
        overlay_cost(shape(), cheap, REGION, 100.0, **kwargs).per_hour
        == overlay_cost(shape(), dear, REGION, 100.0, **kwargs).per_hour
    )


def test_cost_per_million_requests_at_capacity(table: PriceTable) -> None:
    entry = table.price("N2", REGION)
    capacity = 250.0
    cost = overlay_cost(
        shape(2, 4, 16, "N2"), table, REGION, capacity, target_rps=None, headroom=0.3
    )
    per_hour = 2 * (4 * entry.vcpu_hour + 16 * entry.gib_hour)
    assert cost.per_million == pytest.approx(per_hour / (capacity * 3600) * 1e6, rel=1e-12)


def test_zero_capacity_has_no_price_per_request(table: PriceTable) -> None:
    cost = overlay_cost(shape(), table, REGION, 0.0, target_rps=500.0, headroom=0.3)
    assert cost.per_million is None
    assert cost.replicas_for_target is None


@pytest.mark.parametrize("target", [1000.0, 950.0, 10.0])
def test_replicas_for_a_target_load_with_headroom(table: PriceTable, target: float) -> None:
    replicas, capacity, headroom = 4, 400.0, 0.3
    cost = overlay_cost(
        shape(replicas), table, REGION, capacity, target_rps=target, headroom=headroom
    )
    # Exact arithmetic: 1000 req/s × 1.3 / 100 req/s per replica is 13 replicas, not 14.
    needed = (
        Fraction(target)
        * (1 + Fraction(headroom).limit_denominator())
        / (Fraction(capacity) / replicas)
    )
    assert cost.replicas_for_target == max(1, math.ceil(needed))


def test_negative_headroom_is_a_usage_error(table: PriceTable) -> None:
    with pytest.raises(UsageError):
        overlay_cost(shape(), table, REGION, 100.0, target_rps=50.0, headroom=-0.1)


# --- the winner --------------------------------------------------------------------------


def overlay(
    name: str,
    per_million: float | None,
    spread: float | None,
    *,
    capacity: float | None = 100.0,
    error: str = "",
) -> OverlayResult:
    cost = None if per_million is None else Cost(1.0, per_million, None, "")
    return OverlayResult(
        name=name,
        shape=shape(),
        capacity_rps=capacity,
        spread=spread,
        cost=cost,
        error=error,
    )


def test_the_cheapest_wins_when_its_margin_beats_the_spreads() -> None:
    best, runner_up, third = 1.00, 1.20, 2.0
    spreads = 0.05, 0.05
    assert (runner_up - best) / runner_up > sum(spreads)  # the case this test is about
    overlays = [
        overlay("big", runner_up, spreads[1]),
        overlay("small", best, spreads[0]),
        overlay("huge", third, 0.0),
    ]
    winner, note = choose_winner(overlays)
    assert winner == "small"
    assert "small" in note and "big" in note and "cheaper" in note


def test_no_clear_winner_when_the_spreads_overlap() -> None:
    best, runner_up = 1.00, 1.20
    spreads = 0.10, 0.10
    assert (runner_up - best) / runner_up <= sum(spreads)
    winner, note = choose_winner(
        [overlay("a", best, spreads[0]), overlay("b", runner_up, spreads[1])]
    )
    assert winner is None
    assert note.startswith("no clear winner: a and b are within their measured spread")


def test_an_unknown_spread_counts_as_none() -> None:
    winner, _ = choose_winner([overlay("a", 1.00, None), overlay("b", 1.01, None)])
    assert winner == "a"


def test_equal_prices_name_no_winner() -> None:
    winner, _ = choose_winner([overlay("a", 1.0, 0.0), overlay("b", 1.0, 0.0)])
    assert winner is None


def test_no_overlay_met_the_slo() -> None:
    overlays = [overlay("a", None, None, capacity=None), overlay("b", None, None, capacity=None)]
    assert choose_winner(overlays) == (None, "no overlay met the SLO")


def test_the_only_overlay_that_met_the_slo_wins() -> None:
    overlays = [
        overlay("a", None, None, capacity=None),
        overlay("b", 3.0, 0.5),
        overlay("c", 0.5, 0.0, error="deploy failed"),  # a failed overlay never counts
    ]
    winner, note = choose_winner(overlays)
    assert winner == "b"
    assert note == "b is the only overlay that met the SLO"


def test_a_lower_bound_capacity_elsewhere_means_no_clear_winner() -> None:
    """A runner-up whose generator saturated first may really be cheaper than the best."""
    bounded = overlay("b", 2.0, 0.0)
    bounded.lower_bound = True
    winner, note = choose_winner([overlay("a", 1.0, 0.0), bounded])
    assert winner is None
    assert "lower bound" in note and "b" in note
    # The cheapest's own lower bound only makes it cheaper still: it wins.
    cheapest = overlay("a", 1.0, 0.0)
    cheapest.lower_bound = True
    assert choose_winner([cheapest, overlay("b", 2.0, 0.0)])[0] == "a"
