"""GitHub deployment records for deliveries: created once, statuses that follow the run.

Each delivery of a model to an environment is one deployment (task
``deploy:<model>``, ``auto_merge: false``, ``required_contexts: []``) whose payload
says what was delivered: model, version, archive sha256, image digest, overlay. Its
statuses follow the run: ``queued`` (image built) → ``in_progress`` (canary under
test) → ``success`` (promoted) / ``failure`` (the gate failed or was inconclusive:
rolled back) / ``error`` (the delivery broke). The canary has its own record in the
transient environment ``<env>-canary``, made ``inactive`` when the canary goes.

A rerun of the same workflow run finds the record its earlier attempt made (the
payload's ``delivery`` key is the run id and environment) instead of creating a
second one. A promotion marks the model's earlier successful deployments to the
environment ``inactive`` (only this model's: an environment can hold several).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

from github.Deployment import Deployment

from scripts.config import GitHubContext
from scripts.errors import RemoteError
from scripts.github.client import GitHubApi
from scripts.log import log

TASK_PREFIX = "deploy:"
CANARY_SUFFIX = "-canary"
STATES = ("queued", "in_progress", "success", "failure", "error", "inactive", "pending")
FINAL = frozenset({"success", "failure", "error", "inactive"})


@dataclass(frozen=True)
class DeliveryPayload:
    """What a deployment delivered: enough to deliver it again (a deliberate rollback)."""

    model: str
    version: int
    archive_sha256: str | None
    image: str  # REPO@sha256:…
    overlay: str
    delivery: str  # run id + environment: one record per delivery, across rerun attempts
    source: str | None = None

    @property
    def digest(self) -> str:
        return self.image.rsplit("@", 1)[-1]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"digest": self.digest}

    @classmethod
    def from_dict(cls, data: Any) -> DeliveryPayload | None:
        """The payload of one of our deployments; None for anyone else's."""
        if not isinstance(data, dict):
            return None
        try:
            return cls(
                model=str(data["model"]),
                version=int(data["version"]),
                archive_sha256=data.get("archive_sha256"),
                image=str(data["image"]),
                overlay=str(data.get("overlay", "")),
                delivery=str(data.get("delivery", "")),
                source=data.get("source"),
            )
        except (KeyError, TypeError, ValueError):
            return None


def task_for(model: str) -> str:
    return f"{TASK_PREFIX}{model}"


def delivery_key(context: GitHubContext, environment: str) -> str:
    run = context.run_id or f"local-{int(time.time())}"
    return f"{context.repository or 'local'}/{run}/{environment}"


class DeploymentRecords:
    """Create, find and update the deployment records of deliveries."""

    def __init__(self, api: GitHubApi, context: GitHubContext) -> None:
        self.api = api
        self.context = context

    def open(
        self,
        environment: str,
        payload: DeliveryPayload,
        *,
        ref: str,
        description: str,
        transient: bool = False,
    ) -> Deployment:
        """The delivery's record in ``environment``: the one an earlier attempt made, or new."""
        task = task_for(payload.model)
        for attempt in range(1, 4):
            existing = self.find(environment, task, payload.delivery)
            if existing is not None:
                log.info(
                    "deployment %d to %s already recorded: reusing it", existing.id, environment
                )
                return existing
            try:
                created = self.api.create_deployment(
                    ref=ref,
                    environment=environment,
                    task=task,
                    payload=payload.to_dict(),
                    description=description,
                    transient=transient,
                    production=False if transient else None,
                )
            except RemoteError:
                if attempt == 3:
                    raise
                # The create may have happened before the failure: look again first.
                log.warning("creating the deployment failed (attempt %d); checking", attempt)
                time.sleep(attempt)
                continue
            log.info("deployment %d created in %s", created.id, environment)
            return created
        raise AssertionError("unreachable")  # pragma: no cover

    def find(self, environment: str, task: str, delivery: str) -> Deployment | None:
        for deployment in self.api.deployments(environment, task):
            payload = DeliveryPayload.from_dict(deployment.payload)
            if payload is not None and payload.delivery == delivery:
                return deployment
        return None

    def set_state(
        self,
        deployment_id: int,
        state: str,
        description: str,
        *,
        environment_url: str | None = None,
    ) -> None:
        self.api.create_status(
            deployment_id,
            state,
            description,
            log_url=self.context.run_url,
            environment_url=environment_url,
        )

    def supersede(self, environment: str, model: str, keep: int) -> list[int]:
        """Mark the model's earlier successful deployments to ``environment`` inactive."""
        marked = []
        for deployment in self.api.deployments(environment, task_for(model)):
            if deployment.id == keep:
                continue
            states = self.api.states(deployment)
            if states and states[0] == "success":
                self.api.create_status(
                    deployment.id,
                    "inactive",
                    f"superseded by deployment {keep}",
                    log_url=self.context.run_url,
                )
                marked.append(deployment.id)
        return marked

    def last_successful(
        self, environment: str, model: str, *, version: int | None = None
    ) -> DeliveryPayload | None:
        """What to deliver again for a deliberate rollback, from the deployment records.

        With ``version``: the newest successful deployment of that version. Without:
        the successful deployment before the newest one (the release before the live one).
        """
        newest_seen = False
        for deployment in self.api.deployments(environment, task_for(model)):
            payload = DeliveryPayload.from_dict(deployment.payload)
            if payload is None or "success" not in self.api.states(deployment):
                continue
            if version is not None:
                if payload.version == version:
                    return payload
                continue
            if newest_seen:
                return payload
            newest_seen = True
        return None
