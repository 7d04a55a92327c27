"""Talking back on issues and pull requests: one sticky comment per command, reactions
that acknowledge, and the permission check a comment-triggered run must make.

``issue_comment`` workflows run with the default branch's secrets for anyone who can
comment; who may start one is decided here from the collaborators API (admin or
write), never from ``author_association``.
"""

from __future__ import annotations

from scripts.errors import AuthError
from scripts.github.client import GitHubApi
from scripts.github.markdown import COMMENT_LIMIT_CHARS, fit

MARKER = "<!-- tf-release-pipeline:{key} -->"
WRITE_PERMISSIONS = frozenset({"admin", "maintain", "write"})


def upsert_comment(
    api: GitHubApi, issue_number: int, key: str, body: str, *, more: str | None = None
) -> int:
    """Create the comment marked ``key`` on the issue, or edit it in place: one per key."""
    marker = MARKER.format(key=key)
    text = fit(f"{marker}\n{body}", COMMENT_LIMIT_CHARS, in_bytes=False, more=more)
    for comment in api.comments(issue_number):
        if marker in (comment.body or ""):
            api.edit_comment(comment.id, text)
            return int(comment.id)
    return api.create_comment(issue_number, text)


def acknowledge(api: GitHubApi, comment_id: int, content: str) -> None:
    """React to a comment: ``eyes`` when taken, ``rocket`` when done, ``confused`` on refusal."""
    api.react(comment_id, content)


def require_write_access(api: GitHubApi, user: str, what: str) -> str:
    """The user's permission, when it allows ``what``; AuthError otherwise."""
    permission = api.permission(user)
    if permission not in WRITE_PERMISSIONS:
        raise AuthError(
            f"{user} may not {what}: their permission on {api.full_name} is {permission!r}",
            cause="only collaborators with write access may start runs that use secrets",
            fix="ask a maintainer to comment instead",
        )
    return permission
