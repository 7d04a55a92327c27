"""CFS throttling of the serving containers: Δnr_throttled / Δnr_periods over a step.

A container whose threads outnumber its CPU quota burns the quota early in each
100 ms period and stalls for the rest (kubernetes #67577); the ratio of throttled
periods shows *why* an overlay falls over before its CPUs look busy.

* local target: the replicas' own cgroups, ``cpu.stat`` (cgroup v1 and v2 name the
  counters alike: ``nr_periods``, ``nr_throttled``);
* Kubernetes: the kubelet's cAdvisor metrics through the API server's node proxy
  (``/api/v1/nodes/NODE/proxy/metrics/cadvisor``), counters
  ``container_cpu_cfs_periods_total`` and ``container_cpu_cfs_throttled_periods_total``
  for the bench pods' serving container. Needs ``nodes/proxy`` get.

Counters that cannot be read make the ratio unknown (``None``) with the reason: a
step is never failed for it, and never reported as "0 % throttled" either.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from prometheus_client.parser import text_string_to_metric_families

from scripts.deploy.kube_api import KubeApi
from scripts.errors import PipelineError


@dataclass(frozen=True)
class Counters:
    periods: int
    throttled: int
    sources: int  # containers (or cgroups) summed
    note: str  # where they came from, or what is missing

    def ratio_since(self, before: Counters) -> tuple[float | None, str]:
        if self.sources == 0 or before.sources == 0:
            return None, self.note or before.note
        periods = self.periods - before.periods
        if periods <= 0:
            return None, f"no CFS periods elapsed ({self.note}): no CPU quota?"
        return (self.throttled - before.throttled) / periods, self.note


class ThrottlingProbe(Protocol):
    def read(self) -> Counters: ...


UNKNOWN = Counters(0, 0, 0, "")


def parse_cpu_stat(text: str) -> tuple[int, int]:
    values = dict(line.split()[:2] for line in text.splitlines() if len(line.split()) >= 2)
    return int(values.get("nr_periods", 0)), int(values.get("nr_throttled", 0))


@dataclass
class CgroupProbe:
    """The local replicas' cgroups (only the ``cpu`` controller's directory has cpu.stat)."""

    paths: list[Path]

    def read(self) -> Counters:
        periods = throttled = found = 0
        for path in self.paths:
            stat = path / "cpu.stat"
            try:
                p, t = parse_cpu_stat(stat.read_text())
            except OSError:
                continue
            periods, throttled, found = periods + p, throttled + t, found + 1
        if not found:
            return Counters(0, 0, 0, "no cgroup with a CPU quota (not permitted here?)")
        return Counters(periods, throttled, found, f"cgroup cpu.stat of {found} replica(s)")


PERIODS = "container_cpu_cfs_periods_total"
THROTTLED = "container_cpu_cfs_throttled_periods_total"


def parse_cadvisor(
    text: str, namespace: str, pods: Iterable[str], container: str
) -> tuple[int, int, int]:
    """Sum the CFS counters of ``container`` in ``pods``: (periods, throttled, containers)."""
    wanted = set(pods)
    sums = {PERIODS: 0.0, THROTTLED: 0.0}
    seen: set[tuple[str, str]] = set()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name not in sums:
                continue
            labels = sample.labels
            if (
                labels.get("namespace") == namespace
                and labels.get("pod") in wanted
                and labels.get("container") == container
            ):
                sums[sample.name] += sample.value
                seen.add((labels["pod"], sample.name))
    containers = len({pod for pod, name in seen if name == PERIODS})
    return int(sums[PERIODS]), int(sums[THROTTLED]), containers


@dataclass
class CadvisorProbe:
    """The bench pods' serving containers, from each of their nodes' cAdvisor."""

    api: KubeApi
    namespace: str
    selector: str  # label selector of the bench Deployment's pods
    container: str = "tf-serving"

    def read(self) -> Counters:
        pods = self.api.list("v1", "Pod", self.namespace, labels=self.selector)
        by_node: dict[str, list[str]] = {}
        for pod in pods:
            node = pod.get("spec", {}).get("nodeName")
            if node:
                by_node.setdefault(node, []).append(pod["metadata"]["name"])
        periods = throttled = found = 0
        missing: list[str] = []
        for node, names in sorted(by_node.items()):
            try:
                text = self.api.text(f"/api/v1/nodes/{node}/proxy/metrics/cadvisor")
            except PipelineError as exc:
                missing.append(f"{node}: {exc.what}")
                continue
            if text is None:
                missing.append(f"{node}: no cAdvisor metrics")
                continue
            p, t, n = parse_cadvisor(text, self.namespace, names, self.container)
            periods, throttled, found = periods + p, throttled + t, found + n
        note = f"cAdvisor of {len(by_node)} node(s), {found} container(s)"
        if missing:
            note += f"; unreadable: {'; '.join(missing)} (needs nodes/proxy get)"
        if found < len(pods):
            found = 0  # a partial sum would understate throttling: unknown instead
        return Counters(periods, throttled, found, note)
