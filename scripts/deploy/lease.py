"""One deploy at a time per model, namespace and environment: a coordination.k8s.io Lease.

Acquire creates the Lease (or takes over an expired one with an optimistic
``resourceVersion`` update); a live Lease held by someone else is a LockError
naming the holder. The holder renews while it waits; a crashed deploy's Lease
expires after ``duration_s``.
"""

from __future__ import annotations

import contextlib
import getpass
import socket
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from scripts.deploy.kube_api import ApiConflict, KubeApi
from scripts.errors import LockError
from scripts.log import log

_TIME = "%Y-%m-%dT%H:%M:%S.%fZ"


def _now() -> datetime:
    return datetime.now(UTC)


def _fmt(moment: datetime) -> str:
    return moment.strftime(_TIME)


def _parse(text: str | None) -> datetime | None:
    if not text:
        return None
    for fmt in (_TIME, "%Y-%m-%dT%H:%M:%SZ"):
        try:
            return datetime.strptime(text, fmt).replace(tzinfo=UTC)
        except ValueError:
            continue
    return None


def lease_name(model: str, environment: str) -> str:
    return f"tf-release-pipeline-{model}-{environment}"


def default_holder(run_id: str | None = None) -> str:
    who = f"github-run-{run_id}" if run_id else f"{getpass.getuser()}@{socket.gethostname()}"
    return f"{who}/{uuid.uuid4().hex[:8]}"


class DeployLock:
    def __init__(
        self,
        api: KubeApi,
        namespace: str,
        environment: str,
        *,
        model: str,
        holder: str | None = None,
        duration_s: int = 900,
    ) -> None:
        self.api = api
        self.namespace = namespace
        # Per model: two models in one namespace deploy independently.
        self.name = lease_name(model, environment)
        self.holder = holder or default_holder()
        self.duration_s = duration_s
        self._lease: dict[str, Any] | None = None

    def _body(self, base: dict[str, Any] | None) -> dict[str, Any]:
        now = _fmt(_now())
        spec = {
            "holderIdentity": self.holder,
            "leaseDurationSeconds": self.duration_s,
            "acquireTime": now,
            "renewTime": now,
        }
        metadata: dict[str, Any] = {
            "name": self.name,
            "namespace": self.namespace,
            "labels": {"app.kubernetes.io/part-of": "tf-release-pipeline"},
        }
        if base is not None:
            metadata["resourceVersion"] = base["metadata"]["resourceVersion"]
            spec["leaseTransitions"] = base.get("spec", {}).get("leaseTransitions", 0) + 1
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": metadata,
            "spec": spec,
        }

    def _expiry(self, lease: dict[str, Any]) -> datetime | None:
        spec = lease.get("spec", {})
        renewed = _parse(spec.get("renewTime")) or _parse(spec.get("acquireTime"))
        if renewed is None:
            return None
        return renewed + timedelta(seconds=int(spec.get("leaseDurationSeconds", 0)))

    def acquire(self) -> None:
        current = self.api.get("coordination.k8s.io/v1", "Lease", self.namespace, self.name)
        try:
            if current is None:
                self._lease = self.api.create(self._body(None), self.namespace)
                return
            holder = current.get("spec", {}).get("holderIdentity")
            expiry = self._expiry(current)
            if holder and holder != self.holder and expiry is not None and expiry > _now():
                raise LockError(
                    f"another deploy holds {self.namespace}/{self.name}: {holder} "
                    f"(until {expiry:%H:%M:%S} UTC unless renewed)",
                    cause="a deploy to this environment is already running",
                    fix="wait for it to finish; a crashed deploy's lease expires by itself",
                )
            if holder and holder != self.holder:
                log.warning("taking over the expired deploy lease of %s", holder)
            self._lease = self.api.replace(self._body(current), self.namespace)
        except ApiConflict as exc:
            raise LockError(
                f"lost the race for {self.namespace}/{self.name}: {exc}",
                cause="another deploy started at the same moment",
                fix="wait for it to finish, then rerun",
            ) from exc

    def renew(self) -> None:
        if self._lease is None:
            return
        body = self._body(self._lease)
        body["spec"]["acquireTime"] = self._lease.get("spec", {}).get("acquireTime")
        body["spec"]["leaseTransitions"] = self._lease.get("spec", {}).get("leaseTransitions", 0)
        try:
            self._lease = self.api.replace(body, self.namespace)
        except ApiConflict as exc:
            raise LockError(
                f"the deploy lease {self.name} was taken over while deploying",
                cause="it expired (a very long wait) and another deploy took it",
                fix="check the environment's state with `status`, then rerun",
            ) from exc

    def release(self) -> None:
        current = self.api.get("coordination.k8s.io/v1", "Lease", self.namespace, self.name)
        if current and current.get("spec", {}).get("holderIdentity") == self.holder:
            # Background: gone at once. With foreground deletion the Lease lingers, marked
            # for deletion, until the garbage collector runs, and the next deploy finds it
            # still held (found on a real API server; the fake deleted at once).
            self.api.delete(
                "coordination.k8s.io/v1",
                "Lease",
                self.namespace,
                self.name,
                propagation="Background",
            )
        self._lease = None

    @contextlib.contextmanager
    def held(self) -> Iterator[DeployLock]:
        self.acquire()
        try:
            yield self
        finally:
            self.release()
