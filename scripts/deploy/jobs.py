"""Running a rendered Job to its end: what a deploy target returns, for any target.

The load test's generator is a Job (kustomize/loadtest). A target runs it
(``run_job``): the Kubernetes target through the API server, the local target as
processes. Either way the caller gets the same :class:`JobRun`: did it succeed, why
not, how each pod ended, and each pod's log; and the Job is gone afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class PodEnd:
    """How one pod of a Job ended (or where it got stuck)."""

    name: str
    index: int
    phase: str  # Pending | Running | Succeeded | Failed | Unknown
    reason: str = ""  # OOMKilled, Evicted, Error, Completed, ErrImagePull, Unschedulable…
    exit_code: int | None = None
    message: str = ""

    def describe(self) -> str:
        text = f"pod {self.name} (index {self.index}): {self.reason or self.phase}"
        if self.exit_code is not None:
            text += f", exit code {self.exit_code}"
        if self.message:
            text += f": {self.message.strip()[:300]}"
        return text


@dataclass
class JobRun:
    name: str
    succeeded: bool
    failure: str = ""  # why not, in a sentence ("" when it succeeded)
    pods: list[PodEnd] = field(default_factory=list)
    logs: dict[int, str] = field(default_factory=dict)  # completion index → log text
    elapsed_s: float = 0.0

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "succeeded": self.succeeded,
            "failure": self.failure,
            "pods": [p.__dict__ for p in self.pods],
            "elapsed_s": round(self.elapsed_s, 2),
        }
