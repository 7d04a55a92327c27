"""Check runs: a result shown among a pull request's checks, on its head commit.

``POST /repos/{o}/{r}/check-runs`` with ``name``, ``head_sha``, ``status``
(``queued`` → ``in_progress`` → ``completed``), a ``conclusion`` when completed
(``success``, ``failure``, ``neutral``, ``cancelled``, ``timed_out``, ``skipped``,
``action_required``) and an ``output`` (``title``, ``summary``, ``text``: each of
summary and text at most 65,535 bytes; longer ones are cut here with a pointer to the
full report, never refused). ``details_url`` links the workflow run. The token needs
``checks: write`` (a 403 says so).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from scripts.errors import ConfigError
from scripts.github.client import GitHubApi, short
from scripts.github.markdown import fit

SUMMARY_LIMIT_BYTES = 65_535  # output.summary and output.text, each
TITLE_LIMIT = 255  # kept short: GitHub shows the title on one line
STATUSES = ("queued", "in_progress", "completed")
CONCLUSIONS = (
    "success",
    "failure",
    "neutral",
    "cancelled",
    "timed_out",
    "skipped",
    "action_required",
)


@dataclass(frozen=True)
class CheckRun:
    id: int
    status: str
    conclusion: str | None
    head_sha: str
    html_url: str = ""
    title: str = ""

    @property
    def completed(self) -> bool:
        return self.status == "completed"

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> CheckRun:
        output = data.get("output") or {}
        return cls(
            id=int(data["id"]),
            status=str(data["status"]),
            conclusion=data.get("conclusion"),
            head_sha=str(data.get("head_sha", "")),
            html_url=str(data.get("html_url") or ""),
            title=str(output.get("title") or ""),
        )


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def output(
    title: str, summary: str, text: str | None = None, *, more: str | None = None
) -> dict[str, str]:
    """A check run's ``output``, cut to GitHub's limits (``more``: where the rest is)."""
    body = {
        "title": short(title, TITLE_LIMIT),
        "summary": fit(summary, SUMMARY_LIMIT_BYTES, in_bytes=True, more=more),
    }
    if text:
        body["text"] = fit(text, SUMMARY_LIMIT_BYTES, in_bytes=True, more=more)
    return body


def create(
    api: GitHubApi,
    *,
    name: str,
    head_sha: str,
    title: str,
    summary: str,
    details_url: str | None = None,
    external_id: str | None = None,
) -> CheckRun:
    """A new check run on ``head_sha``, queued."""
    body: dict[str, Any] = {
        "name": name,
        "head_sha": head_sha,
        "status": "queued",
        "output": output(title, summary, more=details_url),
    }
    if details_url:
        body["details_url"] = details_url
    if external_id:
        body["external_id"] = external_id
    return CheckRun.from_api(api.create_check_run(body))


def start(api: GitHubApi, check_run_id: int, *, title: str, summary: str) -> CheckRun:
    body = {"status": "in_progress", "started_at": _now(), "output": output(title, summary)}
    return CheckRun.from_api(api.update_check_run(check_run_id, body))


def complete(
    api: GitHubApi,
    check_run_id: int,
    *,
    conclusion: str,
    title: str,
    summary: str,
    text: str | None = None,
    more: str | None = None,
) -> CheckRun:
    """Finish the check run with ``conclusion`` and its output."""
    if conclusion not in CONCLUSIONS:
        raise ConfigError(
            f"{conclusion!r} is not a check run conclusion",
            fix=f"use one of: {', '.join(CONCLUSIONS)}",
        )
    body = {
        "status": "completed",
        "conclusion": conclusion,
        "completed_at": _now(),
        "output": output(title, summary, text, more=more),
    }
    return CheckRun.from_api(api.update_check_run(check_run_id, body))


def read(api: GitHubApi, check_run_id: int) -> CheckRun:
    return CheckRun.from_api(api.check_run(check_run_id))
