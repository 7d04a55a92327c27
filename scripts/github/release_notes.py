"""The delivery's outcome in the release notes: one section per environment, replaced
in place when the release is delivered again, so the body never grows by repetition."""

from __future__ import annotations

import re

BEGIN = "<!-- tf-release-pipeline:delivery:{env} -->"
END = "<!-- /tf-release-pipeline:delivery:{env} -->"


def delivery_section(
    *,
    environment: str,
    verdict: str,
    action: str,
    image: str | None,
    run_url: str | None,
) -> str:
    icon = {"promoted": "✅", "rolled back": "↩️", "already stable": "✅"}.get(action, "⚠️")
    lines = [
        f"### {icon} Delivered to `{environment}`: {action}",
        "",
        f"- Verdict: **{verdict}**",
        f"- Image: `{image}`" if image else "- Image: not built",
    ]
    if run_url:
        lines.append(f"- Run: {run_url}")
    return "\n".join(lines)


def with_section(body: str | None, environment: str, section: str) -> str:
    """``body`` with the environment's delivery section added, or replaced if present."""
    begin, end = BEGIN.format(env=environment), END.format(env=environment)
    block = f"{begin}\n{section}\n{end}"
    text = body or ""
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.DOTALL)
    if pattern.search(text):
        return pattern.sub(lambda _: block, text, count=1)
    return (text.rstrip("\n") + "\n\n" if text.strip() else "") + block + "\n"
