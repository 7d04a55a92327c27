"""The GitHub integration against the fake GitHub API: deployment records through a
delivery, reruns without duplicates, comments and reactions, permission checks, release
resolution from recorded events, and GitHub's failures (403, 404, 422, 5xx, lost responses).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from scripts.config import GitHubContext, Settings
from scripts.errors import (
    ArtifactNotFoundError,
    AuthError,
    ConfigError,
    IntegrityError,
    RemoteError,
)
from scripts.github.client import GitHubApi
from scripts.github.comments import acknowledge, require_write_access, upsert_comment
from scripts.github.delivery import DeliveryIds, DeliveryRecords
from scripts.github.deployments import DeliveryPayload, DeploymentRecords, delivery_key
from scripts.github.events import parse_event
from scripts.github.resolve import ResolveOptions, resolve
from tests.conftest import CLIResult
from tests.fakes.github_api import SHA, FakeGitHub

pytestmark = pytest.mark.integration
TOKEN = "ghs_fake_installation_token"
EVENTS = Path(__file__).resolve().parents[1] / "events"


@pytest.fixture
def github() -> Iterator[FakeGitHub]:
    fake = FakeGitHub().start()
    fake.token = TOKEN
    try:
        yield fake
    finally:
        fake.stop()


def settings_for(fake: FakeGitHub, run_id: str = "7001", attempt: int = 1) -> Settings:
    return Settings(
        github_token=TOKEN,
        github_api_url=fake.api_url,
        github=GitHubContext(
            repository=fake.full_name, run_id=run_id, run_attempt=attempt, sha=SHA
        ),
        github_pacing=0,  # PyGithub's client-side pacing, for github.com: not for a fake
    )


def payload(settings: Settings, version: int, environment: str = "production") -> DeliveryPayload:
    return DeliveryPayload(
        model="digits",
        version=version,
        archive_sha256="a" * 64,
        image=f"registry.example/models/digits@sha256:{str(version) * 64}",
        overlay="production",
        delivery=delivery_key(settings.github, environment),
    )


def records_for(fake: FakeGitHub, settings: Settings, attempts: int = 5) -> DeliveryRecords:
    api = GitHubApi(settings, fake.full_name, attempts=attempts)
    return DeliveryRecords(api, settings.github, "production")


# -- deployment records ----------------------------------------------------------------------
def test_a_delivery_records_queued_in_progress_success_and_supersedes(github: FakeGitHub) -> None:
    earlier_settings = settings_for(github, run_id="6000")
    earlier = records_for(github, earlier_settings)
    old = earlier.queued(payload(earlier_settings, 1))
    earlier.promoted(DeliveryIds(old, None), payload(earlier_settings, 1), None)
    api = GitHubApi(earlier_settings, github.full_name)
    other_model = DeploymentRecords(api, earlier_settings.github)
    resnet = other_model.open(
        "production",
        DeliveryPayload("resnet50", 1, None, "r/resnet@sha256:" + "e" * 64, "production", "x/1/p"),
        ref=SHA,
        description="resnet50 v1",
    )
    other_model.set_state(resnet.id, "success", "promoted")

    settings = settings_for(github)
    records = records_for(github, settings)
    main = records.queued(payload(settings, 2))
    canary = records.canary_started(main, payload(settings, 2))
    records.canary_judged(canary, "pass", "every deciding metric meets its rule", None)
    superseded = records.promoted(
        DeliveryIds(main, canary), payload(settings, 2), "https://digits.acme.example"
    )

    deployment = github.deployments[main]
    assert github.states(deployment) == ["queued", "in_progress", "success"]
    assert deployment.task == "deploy:digits" and deployment.environment == "production"
    assert deployment.payload["version"] == 2 and deployment.payload["digest"].startswith("sha256:")
    assert deployment.statuses[-1].environment_url == "https://digits.acme.example"
    assert deployment.statuses[-1].log_url == "https://github.com/acme/models/actions/runs/7001"
    canary_record = github.deployments[canary]
    assert canary_record.environment == "production-canary" and canary_record.transient
    assert github.states(canary_record) == ["in_progress", "success", "inactive"]
    # The model's earlier live deployment goes inactive; another model's does not.
    assert superseded == [old]
    assert github.states(github.deployments[old])[-1] == "inactive"
    assert github.states(github.deployments[resnet.id])[-1] == "success"
    sent = [r for r in github.api_requests if r.startswith("POST /repos/acme/models/deployments?")]
    assert not sent  # nothing passes parameters in the query string


def test_a_rerun_of_the_same_run_reuses_its_records(github: FakeGitHub) -> None:
    first = records_for(github, settings_for(github, attempt=1))
    main = first.queued(payload(settings_for(github), 3))
    canary = first.canary_started(main, payload(settings_for(github), 3))
    rerun = records_for(github, settings_for(github, attempt=2))
    assert rerun.queued(payload(settings_for(github, attempt=2), 3)) == main
    assert rerun.canary_started(main, payload(settings_for(github, attempt=2), 3)) == canary
    assert len(github.deployments) == 2  # one per environment, not one per attempt
    # A new workflow run delivering the same release is a new deployment.
    again = records_for(github, settings_for(github, run_id="7002"))
    assert again.queued(payload(settings_for(github, run_id="7002"), 3)) != main


def test_a_lost_response_to_a_create_does_not_create_twice(github: FakeGitHub) -> None:
    github.fail("POST", "/deployments", 502, after=True)  # created, then the answer is lost
    settings = settings_for(github)
    main = records_for(github, settings).queued(payload(settings, 4))
    assert list(github.deployments) == [main]


def test_github_outage_on_reads_is_retried_then_reported(github: FakeGitHub) -> None:
    settings = settings_for(github)
    github.fail("GET", "/deployments", 503, times=2)
    records_for(github, settings, attempts=3).queued(payload(settings, 5))  # through the 503s
    github.fail("GET", "/deployments", 500, times=50)
    with pytest.raises(RemoteError) as caught:
        records_for(github, settings, attempts=3).queued(payload(settings, 6))
    assert caught.value.exit_code == 14


def test_a_token_without_deployments_write_is_told_what_to_grant(github: FakeGitHub) -> None:
    github.token_permissions["deployments"] = "read"
    settings = settings_for(github)
    with pytest.raises(AuthError) as caught:
        records_for(github, settings).queued(payload(settings, 7))
    assert "deployments: write" in caught.value.fix
    assert caught.value.exit_code == 15


def test_unknown_deployment_and_unknown_ref_are_named(github: FakeGitHub) -> None:
    settings = settings_for(github)
    with pytest.raises(ArtifactNotFoundError, match="404"):
        records_for(github, settings).conclude(424242)
    stray = Settings(
        github_token=TOKEN,
        github_api_url=github.api_url,
        github=GitHubContext(repository=github.full_name, run_id="9", sha="f" * 40),
        github_pacing=0,
    )
    with pytest.raises(ConfigError, match="No ref found"):
        records_for(github, stray).queued(payload(stray, 8))


def test_long_descriptions_are_cut_to_githubs_140_characters(github: FakeGitHub) -> None:
    settings = settings_for(github)
    records = records_for(github, settings)
    main = records.queued(payload(settings, 9))
    records.rolled_back(DeliveryIds(main, None), "fail", "x" * 500)
    status = github.deployments[main].statuses[-1]
    assert status.state == "failure" and len(status.description) == 140
    assert status.description.endswith("…")


def test_conclude_marks_a_delivery_left_without_a_decision_as_error(github: FakeGitHub) -> None:
    settings = settings_for(github)
    records = records_for(github, settings)
    main = records.queued(payload(settings, 10))
    records.canary_started(main, payload(settings, 10))
    assert records.conclude(main) == "error"
    assert records.conclude(main) == "error"  # a final state is left alone
    assert github.states(github.deployments[main]) == ["queued", "in_progress", "error"]


def test_the_last_successful_deployment_is_found_for_a_deliberate_rollback(
    github: FakeGitHub,
) -> None:
    for run, version, outcome in (("1", 1, "pass"), ("2", 2, "pass"), ("3", 3, "fail")):
        settings = settings_for(github, run_id=run)
        records = records_for(github, settings)
        main = records.queued(payload(settings, version))
        if outcome == "pass":
            records.promoted(DeliveryIds(main, None), payload(settings, version), None)
        else:
            records.rolled_back(DeliveryIds(main, None), outcome, "gate failed")
    finder = DeploymentRecords(GitHubApi(settings_for(github), github.full_name), GitHubContext())
    previous = finder.last_successful("production", "digits")
    assert previous is not None and previous.version == 1  # the one before the live v2
    by_version = finder.last_successful("production", "digits", version=2)
    assert by_version is not None and by_version.image.endswith("2" * 64)
    assert finder.last_successful("production", "digits", version=3) is None  # never succeeded
    assert finder.last_successful("staging", "digits") is None


# -- comments, reactions, permissions ---------------------------------------------------------
def test_one_sticky_comment_per_key_edited_in_place(github: FakeGitHub) -> None:
    github.add_pull_request(42)
    with GitHubApi(settings_for(github), github.full_name) as api:
        first = upsert_comment(api, 42, "bench", "results v1")
        second = upsert_comment(api, 42, "bench", "results v2")
        other = upsert_comment(api, 42, "deploy", "another command")
        assert first == second != other
        body = github.comments[first].body
        assert body.startswith("<!-- tf-release-pipeline:bench -->") and "results v2" in body
        huge = upsert_comment(api, 42, "bench", "| r |\n" * 40_000, more="https://x/run#a")
        assert huge == first and len(github.comments[first].body) <= 65_536
        acknowledge(api, first, "eyes")
        acknowledge(api, first, "eyes")  # the same reaction twice: GitHub answers 200
        acknowledge(api, first, "rocket")
    assert github.comments[first].reactions == ["eyes", "rocket"]


def test_only_writers_may_start_runs_from_comments(github: FakeGitHub) -> None:
    github.collaborators |= {"maintainer": "maintain", "reader": "read", "writer": "write"}
    with GitHubApi(settings_for(github), github.full_name) as api:
        assert require_write_access(api, "octocat", "run /bench") == "admin"
        assert require_write_access(api, "writer", "run /bench") == "write"
        assert require_write_access(api, "maintainer", "run /bench") == "write"
        for user in ("reader", "stranger"):
            with pytest.raises(AuthError, match=f"{user} may not run /bench"):
                require_write_access(api, user, "run /bench")


# -- resolving a release --------------------------------------------------------------------
@pytest.fixture
def archive() -> bytes:
    return b"not really a tarball, but bytes with a digest"


def release_event(tag: str, release_id: int, *, prerelease: bool = False) -> dict[str, object]:
    data = json.loads((EVENTS / "release.published.json").read_text())
    data["release"] |= {"tag_name": tag, "id": release_id, "prerelease": prerelease}
    assert isinstance(data, dict)
    return data


def _resolve(github: FakeGitHub, event: dict[str, object], wait: float = 0.0) -> object:
    with GitHubApi(settings_for(github), github.full_name) as api:
        return resolve(
            api,
            settings_for(github),
            parse_event("release", event),
            ResolveOptions(environment="production", asset_wait_s=wait),
        )


def test_a_release_resolves_to_its_own_assets_and_checksum(
    github: FakeGitHub, archive: bytes
) -> None:
    digest = hashlib.sha256(archive).hexdigest()
    release = github.add_release(555, "digits-v3")
    github.add_asset(release, "digits-3.tar.gz", archive)
    # Uploaded after the event fired: resolve waits for it.
    github.add_asset(
        release, "digits-3.tar.gz.sha256", f"{digest}  digits-3.tar.gz\n".encode(), delay_s=2.5
    )
    github.add_release(556, "digits-v4")  # the "latest" release is never used
    plan = _resolve(github, release_event("digits-v3", 555), wait=30)
    assert plan.source == "github://acme/models/releases/555/digits-3.tar.gz"  # type: ignore[attr-defined]
    assert plan.sha256 == digest  # type: ignore[attr-defined]
    assert (plan.model, plan.version, plan.environment, plan.overlay) == (  # type: ignore[attr-defined]
        "digits",
        3,
        "production",
        "production",
    )


def test_a_prerelease_goes_to_staging_only(github: FakeGitHub, archive: bytes) -> None:
    release = github.add_release(557, "digits-v5", prerelease=True)
    github.add_asset(release, "digits-5.tar.gz", archive)
    digest = hashlib.sha256(archive).hexdigest()
    github.add_asset(release, "digits-5.tar.gz.sha256", f"{digest}\n".encode())
    plan = _resolve(github, release_event("digits-v5", 557, prerelease=True))
    assert (plan.environment, plan.overlay) == ("staging", "staging")  # type: ignore[attr-defined]


def test_missing_assets_fail_before_building_naming_the_expected_names(
    github: FakeGitHub, archive: bytes
) -> None:
    release = github.add_release(558, "digits-v6")
    github.add_asset(release, "digits-6.tar.gz", archive)
    github.add_asset(release, "model.zip", b"x")
    with pytest.raises(ArtifactNotFoundError) as caught:
        _resolve(github, release_event("digits-v6", 558), wait=0)
    assert "digits-6.tar.gz.sha256" in caught.value.what
    assert "model.zip" in caught.value.what  # what the release does have
    assert "digits-6.tar.gz and digits-6.tar.gz.sha256" in caught.value.fix


def test_a_checksum_that_does_not_match_fails_before_building(
    github: FakeGitHub, archive: bytes
) -> None:
    release = github.add_release(559, "digits-v7")
    github.add_asset(release, "digits-7.tar.gz", archive)
    github.add_asset(release, "digits-7.tar.gz.sha256", f"{'0' * 64}  digits-7.tar.gz\n".encode())
    with pytest.raises(IntegrityError, match=r"GitHub's digest of digits-7\.tar\.gz"):
        _resolve(github, release_event("digits-v7", 559))


def test_a_tag_that_names_no_model_is_refused_naming_the_convention(github: FakeGitHub) -> None:
    github.add_release(560, "mnist-v1")
    with pytest.raises(ConfigError) as caught:
        _resolve(github, release_event("mnist-v1", 560))
    assert "NAME-vVERSION" in caught.value.fix


def test_github_resolve_reads_the_recorded_event(
    cli: Callable[..., CLIResult],
    github: FakeGitHub,
    archive: bytes,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    event = release_event("digits-v1", 204481001)
    path = tmp_path / "event.json"
    path.write_text(json.dumps(event))
    release = github.add_release(204481001, "digits-v1")
    github.add_asset(release, "digits-1.tar.gz", archive)
    digest = hashlib.sha256(archive).hexdigest()
    github.add_asset(release, "digits-1.tar.gz.sha256", f"{digest}  digits-1.tar.gz\n".encode())
    for key, value in {
        "GITHUB_EVENT_NAME": "release",
        "GITHUB_EVENT_PATH": str(path),
        "GITHUB_TOKEN": TOKEN,
        "GITHUB_API_URL": github.api_url,
        "TF_PIPELINE_GITHUB_PACING": "0",
    }.items():
        monkeypatch.setenv(key, value)
    result = cli("github", "resolve", "--environment", "", "--asset-wait", "0", "--json")
    assert result.exit_code == 0, result.stderr
    data = result.json()
    assert data["environment"] == "production" and data["sha256"] == digest
    assert data["release-id"] == "204481001" and data["dry-run"] == "false"
    # The same event without its checksum asset: exit 10, naming what is expected.
    github.releases[204481001].assets.pop()
    failed = cli("github", "resolve", "--asset-wait", "0", "--json")
    assert failed.exit_code == ArtifactNotFoundError.exit_code
    assert "digits-1.tar.gz.sha256" in failed.json()["error"]["message"]  # type: ignore[index]


# -- preflight: the GitHub token ------------------------------------------------------------
def test_the_deployment_permission_is_probed_without_creating_anything(
    github: FakeGitHub,
) -> None:
    with GitHubApi(settings_for(github), github.full_name) as api:
        assert api.can_create_deployments(SHA) is True
        github.token_permissions["deployments"] = "read"
        assert api.can_create_deployments(SHA) is False
    assert github.deployments == {}


def test_a_manual_deploy_resolves_auto_overlay_and_an_unreleased_version(
    github: FakeGitHub, archive: bytes
) -> None:
    event = json.loads((EVENTS / "workflow_dispatch.json").read_text())
    event["inputs"] |= {"version": "digits-v8", "overlay": "auto", "environment": "staging"}
    release = github.add_release(561, "digits-v8")
    github.add_asset(release, "digits-8.tar.gz", archive)
    digest = hashlib.sha256(archive).hexdigest()
    github.add_asset(release, "digits-8.tar.gz.sha256", f"{digest}  digits-8.tar.gz\n".encode())
    with GitHubApi(settings_for(github), github.full_name) as api:
        plan = resolve(
            api, settings_for(github), parse_event("workflow_dispatch", event), ResolveOptions()
        )
        assert (plan.overlay, plan.environment, plan.version) == ("staging", "staging", 8)
        assert plan.source.endswith("/releases/561/digits-8.tar.gz") and plan.image == ""
        event["inputs"] |= {"version": "previous"}
        with pytest.raises(ArtifactNotFoundError, match="no earlier successful deployment"):
            resolve(
                api, settings_for(github), parse_event("workflow_dispatch", event), ResolveOptions()
            )
