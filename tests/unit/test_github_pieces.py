"""The GitHub integration's pure parts: tag convention, checksum files, typed events,
release-notes sections, and GitHub's size limits (truncated with a pointer, never failing)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scripts import log as logmod
from scripts.config import GitHubContext
from scripts.errors import ConfigError, IntegrityError, UsageError
from scripts.github.events import CommentEvent, DispatchEvent, ReleaseEvent, load_event, parse_event
from scripts.github.markdown import COMMENT_LIMIT_CHARS, STEP_SUMMARY_LIMIT_BYTES, fit
from scripts.github.release_notes import delivery_section, with_section
from scripts.github.tags import parse_checksum_file, parse_tag, parse_version

EVENTS = Path(__file__).resolve().parents[1] / "events"


# -- the tag convention ---------------------------------------------------------------------
def test_a_tag_names_the_model_and_version() -> None:
    found = parse_tag("digits-v3")
    assert (found.model, found.version) == ("digits", 3)
    assert found.archive == "digits-3.tar.gz"
    assert found.checksum == "digits-3.tar.gz.sha256"


def test_a_model_name_with_dashes_keeps_them(tmp_path: Path) -> None:
    (tmp_path / "image-classifier").mkdir()
    (tmp_path / "image-classifier" / "model.yaml").write_text("name: image-classifier\n")
    found = parse_tag("image-classifier-v12", tmp_path)
    assert (found.model, found.version) == ("image-classifier", 12)


@pytest.mark.parametrize("tag", ["v3", "digits-3", "digits-v0", "Digits-v3", "digits-v3-rc1", ""])
def test_tags_off_the_convention_are_refused_naming_it(tag: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_tag(tag)
    assert "NAME-vVERSION" in caught.value.what
    assert caught.value.exit_code == 3


def test_a_tag_for_a_model_not_in_the_repository_is_refused() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_tag("mnist-v2")
    assert "models/mnist/model.yaml" in caught.value.what
    assert "digits" in caught.value.fix  # names the models that exist


@pytest.mark.parametrize("text", ["3", "v3", "digits-v3", " 3 "])
def test_a_manual_version_may_be_a_number_or_the_tag(text: str) -> None:
    assert parse_version(text, "digits").version == 3


@pytest.mark.parametrize("text", ["x", "0", "digits-v", "-1"])
def test_a_bad_manual_version_is_refused(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_version(text, "digits")


# -- checksum assets ---------------------------------------------------------------------
def test_checksum_files_in_sha256sum_format_or_bare() -> None:
    digest = "a" * 64
    assert parse_checksum_file(f"{digest}  digits-3.tar.gz\n", "digits-3.tar.gz") == digest
    assert parse_checksum_file(f"{digest} *digits-3.tar.gz\n", "digits-3.tar.gz") == digest
    assert parse_checksum_file(f"sha256:{digest.upper()}\n", "digits-3.tar.gz") == digest


def test_a_checksum_of_another_file_or_garbage_is_an_integrity_error() -> None:
    with pytest.raises(IntegrityError, match=r"for 'digits-2\.tar\.gz'"):
        parse_checksum_file(f"{'a' * 64}  digits-2.tar.gz\n", "digits-3.tar.gz")
    with pytest.raises(IntegrityError, match="not a sha256 line"):
        parse_checksum_file("<html>Not Found</html>", "digits-3.tar.gz")


# -- events ------------------------------------------------------------------------------
def test_the_recorded_events_parse_into_their_types() -> None:
    def load(name: str) -> dict[str, object]:
        data = json.loads((EVENTS / name).read_text())
        assert isinstance(data, dict)
        return data

    release = parse_event("release", load("release.published.json"))
    assert isinstance(release, ReleaseEvent)
    assert (release.release.id, release.release.tag_name) == (204481001, "digits-v1")
    assert release.repository.full_name == "acme/models"
    pre = parse_event("release", load("release.prerelease.json"))
    assert isinstance(pre, ReleaseEvent) and pre.release.prerelease
    dispatch = parse_event("workflow_dispatch", load("workflow_dispatch.json"))
    assert isinstance(dispatch, DispatchEvent)
    assert dispatch.text("version") == "previous" and dispatch.flag("dry-run") is False
    comment = parse_event("issue_comment", load("issue_comment.created.json"))
    assert isinstance(comment, CommentEvent) and comment.on_pull_request
    assert comment.comment.body.startswith("/bench")


def test_a_truncated_event_is_a_config_error_naming_the_field(tmp_path: Path) -> None:
    payload = json.loads((EVENTS / "release.published.json").read_text())
    del payload["release"]["tag_name"]
    path = tmp_path / "event.json"
    path.write_text(json.dumps(payload))
    with pytest.raises(ConfigError, match=r"release\.tag_name"):
        load_event(GitHubContext(event_name="release", event_path=path))


def test_no_event_outside_actions_and_unknown_events_are_usage_errors() -> None:
    with pytest.raises(UsageError, match="GITHUB_EVENT_NAME"):
        load_event(GitHubContext())
    with pytest.raises(UsageError, match="'push'"):
        parse_event("push", {})


# -- release notes -------------------------------------------------------------------------
def test_the_delivery_section_is_added_once_and_replaced_in_place() -> None:
    first = delivery_section(
        environment="production",
        verdict="pass",
        action="promoted",
        image="r/digits@sha256:" + "1" * 64,
        run_url="https://github.com/acme/models/actions/runs/7",
    )
    body = with_section("Trained on new data.", "production", first)
    assert body.startswith("Trained on new data.\n\n")
    assert body.count("Delivered to `production`") == 1
    again = with_section(body, "production", first)
    assert again == body  # idempotent
    second = delivery_section(
        environment="production", verdict="fail", action="rolled back", image=None, run_url=None
    )
    replaced = with_section(body, "production", second)
    assert replaced.count("Delivered to `production`") == 1
    assert "rolled back" in replaced and "promoted" not in replaced
    both = with_section(replaced, "staging", first.replace("production", "staging"))
    assert "Delivered to `staging`" in both and "Delivered to `production`" in both
    assert with_section(None, "staging", first).startswith("<!-- tf-release-pipeline")


# -- size limits -------------------------------------------------------------------------
def test_text_that_fits_is_unchanged() -> None:
    assert fit("short", 100, in_bytes=True, more=None) == "short"


def test_a_long_comment_is_cut_at_a_line_with_a_link_and_a_closed_fence() -> None:
    text = "| row |\n" * 2000 + "```mermaid\n" + "line [1, 2, 3]\n" * 20000 + "```\n"
    cut = fit(text, COMMENT_LIMIT_CHARS, in_bytes=False, more="https://x/runs/1#artifacts")
    assert len(cut) <= COMMENT_LIMIT_CHARS
    assert cut.count("```") % 2 == 0  # the open code block was closed
    assert cut.rstrip().endswith("https://x/runs/1#artifacts")
    assert "Truncated" in cut


def test_the_step_summary_never_exceeds_a_mebibyte(tmp_path: Path) -> None:
    summary = tmp_path / "summary.md"
    ci = logmod.CIEnvironment(
        github_actions=True, step_summary=summary, run_url="https://x/actions/runs/9"
    )
    logmod.setup(0, ci)
    try:
        logmod.append_summary("é" * 600_000)  # 1.2 MB of UTF-8
        logmod.append_summary("more")
        logmod.append_summary("even more " * 10)
    finally:
        logmod.setup(0, logmod.CIEnvironment())
    data = summary.read_bytes()
    assert len(data) <= STEP_SUMMARY_LIMIT_BYTES
    assert b"https://x/actions/runs/9#artifacts" in data
