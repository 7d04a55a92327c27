"""The event that started the workflow, parsed once into a typed object.

``$GITHUB_EVENT_PATH`` holds the webhook payload of ``$GITHUB_EVENT_NAME``. The
commands the workflows call take one of these objects; nothing reads the event
file deep inside a stage. Only the fields the pipeline uses are declared; the rest
of GitHub's payload is ignored.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from scripts.config import GitHubContext
from scripts.errors import ConfigError, UsageError
from scripts.model_spec import validation_problems


class _Payload(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class Repository(_Payload):
    full_name: str
    default_branch: str = "main"
    html_url: str = ""

    @property
    def owner(self) -> str:
        return self.full_name.split("/", 1)[0]

    @property
    def name(self) -> str:
        return self.full_name.split("/", 1)[1]


class User(_Payload):
    login: str
    type: str = "User"  # User | Bot | Organization

    @property
    def is_bot(self) -> bool:
        """A GitHub App or bot account: ``type: Bot``, or a login like ``name[bot]``."""
        return self.type == "Bot" or self.login.endswith("[bot]")


class ReleaseAssetRef(_Payload):
    id: int
    name: str
    state: str = "uploaded"


class Release(_Payload):
    id: int
    tag_name: str
    name: str | None = None
    body: str | None = None
    draft: bool = False
    prerelease: bool = False
    html_url: str = ""
    assets: list[ReleaseAssetRef] = Field(default_factory=list)


class ReleaseEvent(_Payload):
    """``release`` (we subscribe to ``published``: releases and pre-releases, not drafts)."""

    action: str
    release: Release
    repository: Repository


class DispatchEvent(_Payload):
    """``workflow_dispatch``: the typed inputs arrive as JSON strings and booleans."""

    inputs: dict[str, Any] = Field(default_factory=dict)
    ref: str = ""
    repository: Repository

    def text(self, name: str, default: str = "") -> str:
        value = self.inputs.get(name, default)
        return default if value is None else str(value)

    def flag(self, name: str) -> bool:
        value = self.inputs.get(name, False)
        return value is True or str(value).lower() == "true"


class IssueRef(_Payload):
    number: int
    pull_request: dict[str, Any] | None = None  # present only when the issue is a PR


class Comment(_Payload):
    id: int
    body: str
    user: User
    author_association: str = "NONE"  # never used to authorise (see comments.py)
    html_url: str = ""


class CommentEvent(_Payload):
    """``issue_comment`` (comments on issues and pull requests alike; ``action`` is
    ``created``, ``edited`` or ``deleted``)."""

    action: str
    issue: IssueRef
    comment: Comment
    repository: Repository

    @property
    def on_pull_request(self) -> bool:
        return self.issue.pull_request is not None


Event = ReleaseEvent | DispatchEvent | CommentEvent
EVENT_TYPES: dict[str, type[ReleaseEvent] | type[DispatchEvent] | type[CommentEvent]] = {
    "release": ReleaseEvent,
    "workflow_dispatch": DispatchEvent,
    "issue_comment": CommentEvent,
}


def parse_event(name: str, payload: dict[str, Any]) -> Event:
    """The payload of event ``name`` as its typed model (ConfigError naming a bad field)."""
    model = EVENT_TYPES.get(name)
    if model is None:
        raise UsageError(
            f"this command does not handle the {name!r} event",
            cause="the workflow runs it from a trigger it was not written for",
            fix=f"call it from a workflow triggered by: {', '.join(EVENT_TYPES)}",
        )
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        raise ConfigError(
            f"the {name} event payload is not what GitHub sends: {validation_problems(exc)}",
            cause="a hand-written or truncated event file",
            fix="replay a payload recorded from GitHub (see tests/events/)",
        ) from exc


def load_event(context: GitHubContext) -> Event:
    """Read ``$GITHUB_EVENT_PATH`` once, as ``$GITHUB_EVENT_NAME``."""
    if not context.event_name or context.event_path is None:
        raise UsageError(
            "no GitHub event: GITHUB_EVENT_NAME and GITHUB_EVENT_PATH are not set",
            cause="the command runs outside GitHub Actions",
            fix="run it in a workflow, or set both variables to replay a recorded event",
        )
    try:
        payload = json.loads(Path(context.event_path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"cannot read the event file {context.event_path}: {exc}",
            fix="point GITHUB_EVENT_PATH at the JSON payload of the event",
        ) from exc
    if not isinstance(payload, dict):
        raise ConfigError(f"the event file {context.event_path} is not a JSON object")
    return parse_event(context.event_name, payload)
