"""`bench --target local` on real servers whose capacity is known.

The local server's ``service_ms`` fault makes every replica a single virtual server
taking exactly that long per request, so a replica's capacity is 1000 / service_ms
req/s whatever this machine's speed: the search must land within 10 % of it, for one
replica and for two behind one Service. A generator too small for the offered rate
(a generator Job with a fifth of a CPU) must never give a pass.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import CLIResult, DigitsReleases

pytestmark = [pytest.mark.integration, pytest.mark.tensorflow, pytest.mark.slow]

# 20 req/s per replica: slow enough that a 0.25-CPU replica's own work (~0.1 CPU at that
# rate) never meets its CFS quota, so the virtual server alone sets the capacity.
SERVICE_MS = 50.0


@pytest.fixture(scope="module")
def archive(digits_releases: DigitsReleases) -> Path:
    return digits_releases(1)[1]  # trained once per session, read-only here


def _bench(
    cli: Callable[..., CLIResult], tmp_path: Path, archive: Path, *extra: object
) -> CLIResult:
    return cli(
        "bench",
        "--model", "digits",
        "--source", archive,
        "--target", "local",
        "--quick",
        "--out", tmp_path / "out",
        "--state-dir", tmp_path / "state",
        "--cache-dir", tmp_path / "cache",
        "--timeout", "120",
        "--json",
        *extra,
    )  # fmt: skip


def test_the_search_finds_the_known_capacity_of_two_replicas_behind_one_service(
    cli: Callable[..., CLIResult], tmp_path: Path, archive: Path
) -> None:
    result = _bench(
        cli, tmp_path, archive,
        "--overlays", "local-2x250m",
        "--unsafe-fault-injection", f"service_ms={SERVICE_MS:g}",
        "--slo-p99-ms", "300",
        "--start-rps", "30",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    data = result.json()
    rows = {row["name"]: row for row in data["overlays"]}
    for name, replicas in (("local-2x250m", 2),):  # one replica: the Kubernetes test
        truth = replicas * 1000.0 / SERVICE_MS
        row = rows[name]
        assert row["capacity_rps"] is not None, row["stopped"]
        assert abs(row["capacity_rps"] - truth) <= 0.10 * truth, (name, row["capacity_rps"])
        assert not row["capacity_lower_bound"]
        steps = row["steps"]
        assert steps[0]["phase"] == "warmup"
        assert len([s for s in steps if s["phase"] == "bisect"]) <= 5
        assert any(s["verdict"] == "fail" for s in steps)  # the SLO did break above it
        assert all(s["throttled_ratio"] is None or 0 <= s["throttled_ratio"] <= 1 for s in steps)
        # The cost model on the measured capacity: $/1M = $/h ÷ (capacity × 3600) × 1e6.
        per_million = row["cost_per_hour"] / (row["capacity_rps"] * 3600) * 1e6
        assert row["cost_per_million"] == pytest.approx(per_million)
        assert row["p99_ms"] <= 300
    assert data["winner"] == "local-2x250m"
    assert "only overlay" in data["winner_note"]
    out = tmp_path / "out"
    assert json.loads((out / "bench.json").read_text())["config_digest"] == data["config_digest"]
    for chart in ("p99-vs-offered.png", "achieved-vs-offered.png", "cost-vs-capacity.png"):
        assert (out / chart).stat().st_size > 1000
    assert "```mermaid" in (out / "report.md").read_text()
    # Torn down: no replica state, no server process left.
    assert not list((tmp_path / "state").glob("**/state.json"))


def test_a_saturated_generator_never_gives_a_pass(
    cli: Callable[..., CLIResult], tmp_path: Path, archive: Path
) -> None:
    """A generator Job held to 0.2 CPU cannot send 1,500 req/s: no step may pass."""
    result = _bench(
        cli, tmp_path, archive,
        "--overlays", "local-1x500m",
        "--generator", "job",
        "--generator-cpu", "200m",
        "--start-rps", "1500",
        "--max-rps", "1500",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    row = result.json()["overlays"][0]
    verdicts = [s["verdict"] for s in row["steps"]]
    assert "pass" not in verdicts and "invalid" in verdicts, verdicts
    assert row["capacity_rps"] is None
    assert "saturated" in row["stopped"]
    invalid = next(s for s in row["steps"] if s["verdict"] == "invalid")
    assert "saturated" in " ".join(invalid["reasons"]) or "failed" in " ".join(invalid["reasons"])


def test_bases_are_a_dimension_each_measured_on_its_own_image(
    cli: Callable[..., CLIResult], tmp_path: Path, archive: Path
) -> None:
    """`--bases`: the model is built once per base, and each overlay is measured on each.

    Two local bases whose images carry a known service time in their config's Env (the
    path TF_ENABLE_ONEDNN_OPTS takes for local-onednn / local-eigen): 50 ms and 25 ms a
    request. One light step each (10 req/s, below their capacities of 20 and 40 req/s)
    tells them apart: the median latency is the base's service time, so the report can
    only get them right if every variant really ran its own base's image."""
    import shutil

    import yaml

    from tests.conftest import REPO_ROOT

    tree = tmp_path / "kustomize"
    shutil.copytree(REPO_ROOT / "kustomize", tree)
    catalog = yaml.safe_load((tree / "bases.yaml").read_text())
    catalog["bases"]["svc-50ms"] = {"env": {"TFRP_UNSAFE_FAULT_INJECTION": "service_ms=50"}}
    catalog["bases"]["svc-25ms"] = {"env": {"TFRP_UNSAFE_FAULT_INJECTION": "service_ms=25"}}
    (tree / "bases.yaml").write_text(yaml.safe_dump(catalog))
    result = _bench(
        cli, tmp_path, archive,
        "--overlays", "local-1x500m",
        "--bases", "svc-50ms,svc-25ms",
        "--kustomize-dir", tree,
        "--slo-p99-ms", "300",
        "--start-rps", "10",
        "--max-rps", "10",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    data = result.json()
    rows = [(row["name"], row["overlay"], row["base"]) for row in data["overlays"]]
    assert rows == [
        ("local-1x500m--svc-50ms", "local-1x500m", "svc-50ms"),
        ("local-1x500m--svc-25ms", "local-1x500m", "svc-25ms"),
    ]
    images = data["config"]["bases"]
    assert set(images) == {"svc-50ms", "svc-25ms"} and len(set(images.values())) == 2
    slow, fast = data["overlays"]
    for row in (slow, fast):
        assert row["capacity_rps"] == 10 and row["capacity_lower_bound"], row["stopped"]
        assert row["cost_per_million"] is not None
    assert slow["p50_ms"] >= 50, slow
    assert 25 <= fast["p50_ms"] < 50, fast
    report = (tmp_path / "out" / "report.md").read_text()
    assert "`local-1x500m` on `svc-50ms`" in report and "`local-1x500m` on `svc-25ms`" in report
    assert "**Bases compared**" in report
    assert not list((tmp_path / "state").glob("**/state.json"))
