"""GitHub's size limits on Markdown, kept without failing: truncate, say so, link the rest.

A step summary holds at most 1 MiB per step; a comment body 65,536 characters. A
report that does not fit is cut at a line boundary (closing an open code block) and
ends with a link to where the whole report is (the workflow run's artifacts).
"""

from __future__ import annotations

STEP_SUMMARY_LIMIT_BYTES = 1024 * 1024
COMMENT_LIMIT_CHARS = 65_536


def _size(text: str, in_bytes: bool) -> int:
    return len(text.encode("utf-8")) if in_bytes else len(text)


def fit(text: str, limit: int, *, in_bytes: bool, more: str | None) -> str:
    """``text`` if it fits in ``limit``; else its head, a closed fence and a pointer."""
    if _size(text, in_bytes) <= limit:
        return text
    where = (
        f"the full report is in the workflow run's artifacts: {more}"
        if more
        else ("the full report is in the workflow run's artifacts")
    )
    note = (
        f"\n\n> ✂️ Truncated to fit GitHub's limit of {limit:,} "
        + ("bytes" if in_bytes else "characters")
        + f"; {where}\n"
    )
    budget = limit - _size(note, in_bytes) - _size("\n```\n", in_bytes)
    kept: list[str] = []
    used = 0
    for line in text.splitlines(keepends=True):
        cost = _size(line, in_bytes)
        if used + cost > budget:
            break
        kept.append(line)
        used += cost
    head = "".join(kept)
    if head.count("```") % 2 == 1:  # an open code block (a table row can't hold one)
        head += "\n```\n"
    return head + note
