"""A delivery's GitHub records through its phases (the jobs of ``deliver.yml``).

    build   → the environment's deployment, ``queued`` (its payload names the digest)
    canary  → ``in_progress``; the canary's own record in ``<env>-canary`` (transient):
              ``in_progress``, then ``success`` / ``failure`` / ``error`` with the verdict
    promote → ``success`` (earlier deployments of the model ``inactive``); canary ``inactive``
    rollback→ ``failure`` (the gate failed or was inconclusive), ``error`` (it broke);
              canary ``inactive``
    conclude→ ``error`` if no phase reached a decision (a job died or was cancelled)

Descriptions stay within GitHub's 140 characters; ``log_url`` is the workflow run.
"""

from __future__ import annotations

from dataclasses import dataclass

from scripts.config import GitHubContext
from scripts.github.client import GitHubApi
from scripts.github.deployments import (
    CANARY_SUFFIX,
    FINAL,
    DeliveryPayload,
    DeploymentRecords,
)
from scripts.log import log

OUTCOME_STATES = {"pass": "success", "fail": "failure", "inconclusive": "failure"}


@dataclass(frozen=True)
class DeliveryIds:
    deployment: int | None = None
    canary: int | None = None


class DeliveryRecords:
    def __init__(self, api: GitHubApi, context: GitHubContext, environment: str) -> None:
        self.records = DeploymentRecords(api, context)
        self.api = api
        self.context = context
        self.environment = environment

    @property
    def canary_environment(self) -> str:
        return f"{self.environment}{CANARY_SUFFIX}"

    def _ref(self) -> str:
        return self.context.sha or self.context.ref or "main"

    def queued(self, payload: DeliveryPayload) -> int:
        deployment = self.records.open(
            self.environment,
            payload,
            ref=self._ref(),
            description=f"{payload.model} v{payload.version}: image built",
        )
        states = self.api.states(deployment)
        if not states:
            self.records.set_state(
                deployment.id, "queued", f"{payload.model} v{payload.version}: image built"
            )
        return int(deployment.id)

    def canary_started(self, deployment_id: int | None, payload: DeliveryPayload) -> int:
        if deployment_id:
            self.records.set_state(
                deployment_id,
                "in_progress",
                f"{payload.model} v{payload.version}: canary under test",
            )
        canary = self.records.open(
            self.canary_environment,
            payload,
            ref=self._ref(),
            description=f"canary of {payload.model} v{payload.version}",
            transient=True,
        )
        self.records.set_state(canary.id, "in_progress", "canary deployed; load test running")
        return int(canary.id)

    def canary_judged(
        self,
        canary_id: int,
        outcome: str,
        reason: str,
        environment_url: str | None,
    ) -> None:
        state = OUTCOME_STATES.get(outcome, "error")
        self.records.set_state(
            canary_id, state, f"gate {outcome}: {reason}", environment_url=environment_url
        )

    def promoted(
        self,
        ids: DeliveryIds,
        payload: DeliveryPayload,
        environment_url: str | None,
    ) -> list[int]:
        superseded: list[int] = []
        if ids.deployment:
            self.records.set_state(
                ids.deployment,
                "success",
                f"{payload.model} v{payload.version} promoted",
                environment_url=environment_url,
            )
            superseded = self.records.supersede(self.environment, payload.model, ids.deployment)
        if ids.canary:
            self.records.set_state(ids.canary, "inactive", "canary removed: promoted")
        return superseded

    def rolled_back(self, ids: DeliveryIds, outcome: str | None, reason: str) -> None:
        if ids.deployment:
            state = OUTCOME_STATES.get(outcome or "", "error")
            if state == "success":  # the gate passed, the promotion did not happen
                state = "failure"
            self.records.set_state(ids.deployment, state, f"rolled back: {reason}")
        if ids.canary:
            self.records.set_state(ids.canary, "inactive", "canary removed: rolled back")

    def conclude(self, deployment_id: int | None) -> str | None:
        """The record's final state; ``error`` is set when no phase reached a decision."""
        if not deployment_id:
            return None
        deployment = self.api.deployment(deployment_id)
        states = self.api.states(deployment)
        if states and states[0] in FINAL:
            return states[0]
        log.error("deployment %d has no final state: marking it error", deployment_id)
        self.records.set_state(
            deployment_id,
            "error",
            "the delivery stopped before a decision (job failed or cancelled)",
        )
        return "error"
