"""The bench's small parts: shapes, bench objects, throttling counters, step verdicts."""

from __future__ import annotations

from pathlib import Path

import pytest

from scripts.bench.results import Slo
from scripts.bench.shapes import family_of, shape_of
from scripts.bench.slots import OVERLAY_LABEL, RUN_LABEL, bench_objects, slot_name
from scripts.bench.steps import judge
from scripts.bench.throttling import CgroupProbe, Counters, parse_cadvisor, parse_cpu_stat
from scripts.loadtest.results import TrackResult
from scripts.manifests.render import RenderRequest, render

IMAGE = "registry.example/models/digits@sha256:" + "ab" * 32


def _rendered(overlay: str):  # type: ignore[no-untyped-def]
    return render(RenderRequest(overlay=overlay, image=IMAGE, model="digits", allow_ablations=True))


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def test_shapes_read_replicas_cpu_threads_and_batching_from_the_rendered_stable_track() -> None:
    shape = shape_of(_rendered("2x-8cpu-batching"), default_family="E2")
    assert (shape.replicas, shape.cpu, shape.batching) == (2, 7.5, True)
    assert shape.intra_op == "from request"
    small = shape_of(_rendered("local-2x250m"), default_family="local")
    assert (small.replicas, small.cpu, small.memory_gib, small.batching) == (2, 0.25, 1.0, False)
    assert (small.intra_op, small.inter_op, small.machine_family) == ("from request", "1", "local")
    ablation = shape_of(_rendered("local-threads-default"), default_family="local")
    assert (ablation.intra_op, ablation.inter_op) == ("default", "default")


def test_the_machine_family_comes_from_the_node_selector() -> None:
    assert family_of({"cloud.google.com/machine-family": "n2"}, "E2") == "N2"
    assert family_of({"node.kubernetes.io/instance-type": "e2-standard-4"}, "N2") == "E2"
    assert family_of({"cloud.google.com/gke-nodepool": "pool-4vcpu"}, "E2") == "E2"


def test_bench_objects_are_renamed_and_never_select_stable_or_each_other() -> None:
    production = _rendered("production")
    a = bench_objects(_rendered("4x-4cpu"), "run123456789")
    b = bench_objects(_rendered("8x-2cpu"), "run123456789")
    names = {o["metadata"]["name"] for o in a + b}
    assert not names & {o["metadata"]["name"] for o in production.objects}
    assert {o["kind"] for o in a} == {"Deployment", "Service", "ConfigMap"}  # no PDB/HPA/canary
    for objs, other in ((a, b), (b, a)):
        service = next(o for o in objs if o["kind"] == "Service")
        deployment = next(o for o in objs if o["kind"] == "Deployment")
        pods = deployment["spec"]["template"]["metadata"]["labels"]
        other_pods = next(o for o in other if o["kind"] == "Deployment")["spec"]["template"][
            "metadata"
        ]["labels"]
        assert _selects(service["spec"]["selector"], pods)
        assert not _selects(service["spec"]["selector"], other_pods)
        assert _selects(deployment["spec"]["selector"]["matchLabels"], pods)
        assert pods[RUN_LABEL] == "run123456789" and pods["track"] == "bench"
        assert "namespace" not in deployment["metadata"]
        for prod in production.objects:  # production's Services never pick a bench pod
            if prod["kind"] == "Service":
                assert not _selects(prod["spec"]["selector"], pods)
        config = {o["metadata"]["name"] for o in objs if o["kind"] == "ConfigMap"}
        volumes = deployment["spec"]["template"]["spec"]["volumes"]
        assert {v["configMap"]["name"] for v in volumes if "configMap" in v} <= config
    assert (
        next(o for o in a if o["kind"] == "Deployment")["metadata"]["labels"][OVERLAY_LABEL]
        == "4x-4cpu"
    )


def test_slot_names_are_dns_labels() -> None:
    name = slot_name("x" * 80, "abcdef123456")
    assert len(name) <= 63 and name.startswith("bench-") and name.endswith("-abcdef")


def test_cpu_stat_and_cadvisor_counters() -> None:
    assert parse_cpu_stat("nr_periods 120\nnr_throttled 30\nthrottled_time 99\n") == (120, 30)
    cadvisor = (
        "# HELP container_cpu_cfs_periods_total Number of elapsed enforcement period intervals.\n"
        "# TYPE container_cpu_cfs_periods_total counter\n"
        'container_cpu_cfs_periods_total{container="tf-serving",namespace="tf-bench",'
        'pod="bench-a-1"} 200 1700000000000\n'
        'container_cpu_cfs_periods_total{container="tf-serving",namespace="tf-bench",'
        'pod="bench-a-2"} 100 1700000000000\n'
        'container_cpu_cfs_periods_total{container="tf-serving",namespace="prod",'
        'pod="bench-a-1"} 999 1700000000000\n'
        "# HELP container_cpu_cfs_throttled_periods_total Number of throttled period intervals.\n"
        "# TYPE container_cpu_cfs_throttled_periods_total counter\n"
        'container_cpu_cfs_throttled_periods_total{container="tf-serving",namespace="tf-bench",'
        'pod="bench-a-1"} 50 1700000000000\n'
        'container_cpu_cfs_throttled_periods_total{container="istio-proxy",namespace="tf-bench",'
        'pod="bench-a-1"} 70 1700000000000\n'
    )
    assert parse_cadvisor(cadvisor, "tf-bench", ["bench-a-1", "bench-a-2"], "tf-serving") == (
        300,
        50,
        2,
    )


def test_throttled_ratio_is_a_delta_and_unknown_without_counters(tmp_path: Path) -> None:
    before, after = Counters(100, 10, 1, "x"), Counters(300, 70, 1, "x")
    assert after.ratio_since(before) == (0.3, "x")
    assert Counters(0, 0, 0, "no cgroup").ratio_since(before)[0] is None
    assert Counters(100, 10, 1, "x").ratio_since(before)[0] is None  # no period elapsed
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "cpu.stat").write_text("nr_periods 10\nnr_throttled 4\n")
    probe = CgroupProbe([tmp_path / "a", tmp_path / "missing"])
    assert probe.read().periods == 10 and probe.read().sources == 1
    assert CgroupProbe([]).read().sources == 0


def _track(**kw: object) -> TrackResult:
    values: dict[str, object] = {
        "track": "canary",
        "endpoints": ["http://x"],
        "target_rate": 100.0,
        "duration_s": 10.0,
        "warmup_s": 1.0,
        "samples": 1000,
        "errors": 0,
        "achieved_rate": 100.0,
        "latency_ms": {"p50": 5.0, "p95": 9.0, "p99": 20.0},
        "generator_cpu": 0.2,
        "generator_lag_p99_ms": 1.0,
        "saturated": False,
    }
    values.update(kw)
    return TrackResult(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("change", "verdict", "reason"),
    [
        ({}, "pass", ""),
        ({"latency_ms": {"p99": 60.0}}, "fail", "p99"),
        ({"errors": 20}, "fail", "errors"),
        ({"achieved_rate": 90.0}, "fail", "answered"),
        ({"saturated": True, "saturation_reasons": ["CPU 97%"], "latency_ms": {"p99": 1.0}},
         "invalid", "saturated"),
        ({"broken": "locust crashed"}, "invalid", "broke"),
        ({"samples": 5}, "invalid", "samples"),
    ],
)  # fmt: skip
def test_a_step_is_judged_on_the_slo_and_a_saturated_generator_never_passes(
    change: dict[str, object], verdict: str, reason: str
) -> None:
    got, reasons = judge(_track(**change), Slo(p99_ms=50.0, error_ratio=0.01), 100.0)
    assert got == verdict
    assert reason in " ".join(reasons)


def test_after_a_failed_step_light_probes_wait_for_the_backlog_to_drain(tmp_path: Path) -> None:
    """A server still working through an overloaded step's queue must not be measured."""
    from scripts.bench.steps import PROBE_RPS, StepRunner, StepTiming
    from scripts.bench.throttling import CgroupProbe
    from scripts.loadtest.runner import LoadTestRequest

    backlog = [900.0, 400.0]  # p99 of the first probes, then drained
    rates: list[float] = []

    def generator(request: LoadTestRequest) -> dict[str, TrackResult]:
        rates.append(request.profile.rate)
        if request.profile.rate > PROBE_RPS:  # the step itself: overloaded
            return {"canary": _track(latency_ms={"p99": 5000.0}, achieved_rate=40.0)}
        p99 = backlog.pop(0) if backlog else 10.0
        return {"canary": _track(latency_ms={"p99": p99}, samples=10, achieved_rate=5.0)}

    runner = StepRunner(
        model="digits", endpoints=["http://x"], payload=None, signature_name="s",
        protocol="rest", slo=Slo(p99_ms=50.0), timing=StepTiming(1.0, 4.0, recover_s=30.0),
        out=tmp_path, generator=generator, probe=CgroupProbe([]),
    )  # fmt: skip
    step = runner(100.0, "ramp")
    assert step.verdict == "fail"
    assert rates == [100.0]  # nothing waits after a step until another one follows
    runner(50.0, "bisect")
    assert rates == [100.0, PROBE_RPS, PROBE_RPS, PROBE_RPS, 50.0]  # two slow, then healthy
    assert runner.probes == 3
    assert step.throttled_ratio is None and "no cgroup" in step.throttling_note
