"""`bases record --open-pr` against the fake GitHub API: the branch, the commit through the
contents API, the pull request, reruns that change nothing, and GitHub's failures (a
branch made meanwhile, a lost response, a stale blob sha, the repository setting that
forbids Actions to open pull requests, a token without contents: write).

The default branch of the fake holds this checkout's kustomize/bases.yaml; the Build
resource is tests/data/cloudbuild/build-success.json (the API's shape).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO_ROOT, CLIResult
from tests.fakes.github_api import FakeGitHub

pytestmark = pytest.mark.integration
TOKEN = "ghs_fake_installation_token"
FIXTURE = REPO_ROOT / "tests" / "data" / "cloudbuild" / "build-success.json"
CATALOG = "kustomize/bases.yaml"
REPOSITORY = "us-docker.pkg.dev/acme-ml/serving-bases/tensorflow-serving"
DIGEST = "sha256:4f1c7e0b9a2d3c5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6"
BRANCH = "bases/c2-cascadelake-4f1c7e0b9a2d"
TITLE = "bases: c2-cascadelake built (TF Serving 2.20.0, -march=cascadelake)"


@pytest.fixture
def github(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeGitHub]:
    fake = FakeGitHub().start()
    fake.token = TOKEN
    fake.add_branch(
        "main",
        {CATALOG: (REPO_ROOT / CATALOG).read_bytes(), "README.md": b"# models\n"},
    )
    monkeypatch.setenv("GITHUB_API_URL", fake.api_url)
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    monkeypatch.setenv("GITHUB_REPOSITORY", fake.full_name)
    monkeypatch.setenv("GITHUB_RUN_ID", "7001")
    monkeypatch.setenv("TF_PIPELINE_GITHUB_PACING", "0")
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def record(cli: Callable[..., CLIResult], tmp_path: Path) -> Callable[[], CLIResult]:
    tree = tmp_path / "kustomize"
    tree.mkdir()
    shutil.copy(REPO_ROOT / CATALOG, tree / "bases.yaml")
    build_json = tmp_path / "build.json"
    shutil.copy(FIXTURE, build_json)

    def run() -> CLIResult:
        return cli("bases", "record", "--base", "c2-cascadelake", "--build-json", build_json,
                   "--kustomize-dir", tree, "--open-pr", "--json")  # fmt: skip

    return run


def pinned(text: bytes | None) -> dict[str, object]:
    assert text is not None
    base = yaml.safe_load(text)["bases"]["c2-cascadelake"]
    assert isinstance(base, dict)
    return base


def test_record_opens_a_pull_request_that_pins_the_digest(
    github: FakeGitHub, record: Callable[[], CLIResult], tmp_path: Path
) -> None:
    main_before = github.branches["main"]
    result = record()
    assert result.exit_code == 0, result.stderr
    data = result.json()
    pull = data["pull_request"]
    assert isinstance(pull, dict)
    assert pull["branch"] == BRANCH and pull["created"] is True and pull["committed"] is True
    # The branch: one commit on the default branch's head, changing the two lines.
    commits = github.log(BRANCH)
    assert commits[1].sha == main_before and len(commits) == 2
    assert commits[0].message.startswith("bases: pin c2-cascadelake to sha256:4f1c7e0b9a2d")
    assert github.branches["main"] == main_before  # never pushed to the default branch
    before = github.file_at("main", CATALOG)
    after = github.file_at(BRANCH, CATALOG)
    assert before is not None and after is not None
    assert pinned(after) == pinned(before) | {"image": REPOSITORY, "digest": DIGEST}
    changed = [
        (a, b)
        for a, b in zip(before.decode().splitlines(), after.decode().splitlines(), strict=True)
        if a != b
    ]
    assert [b for _, b in changed] == [f"    image: {REPOSITORY}", f"    digest: {DIGEST}"]
    # The same text the command wrote into this checkout.
    assert after == (tmp_path / "kustomize" / "bases.yaml").read_bytes()
    # The pull request, to the default branch, naming the build.
    [fake_pull] = github.pulls.values()
    assert fake_pull.number == pull["number"] and fake_pull.state == "open"
    assert (fake_pull.head_ref, fake_pull.base_ref, fake_pull.title) == (BRANCH, "main", TITLE)
    assert "3b8e0a52-0d0f-4c2e-9a57-6f3b1c2d4e5f" in fake_pull.body
    assert "https://console.cloud.google.com/cloud-build/builds" in fake_pull.body
    assert DIGEST in fake_pull.body and "-march=cascadelake" in fake_pull.body
    assert "https://github.com/acme/models/actions/runs/7001" in fake_pull.body
    assert pull["url"] == f"https://github.com/acme/models/pull/{fake_pull.number}"


def test_a_rerun_reuses_the_branch_and_the_pull_request(
    github: FakeGitHub, record: Callable[[], CLIResult]
) -> None:
    first = record()
    assert first.exit_code == 0, first.stderr
    head = github.branches[BRANCH]
    github.api_requests.clear()
    second = record()
    assert second.exit_code == 0, second.stderr
    pull = second.json()["pull_request"]
    assert isinstance(pull, dict)
    assert pull["created"] is False and pull["committed"] is False
    assert len(github.pulls) == 1 and github.branches[BRANCH] == head  # nothing new
    writes = [r for r in github.api_requests if not r.startswith("GET ")]
    assert writes == [], writes


def test_a_pull_request_edited_by_hand_is_brought_back_up_to_date(
    github: FakeGitHub, record: Callable[[], CLIResult]
) -> None:
    assert record().exit_code == 0
    [pull] = github.pulls.values()
    pull.title, pull.body = "wip", "scratch"
    assert record().exit_code == 0
    assert pull.title == TITLE and "3b8e0a52" in pull.body


def test_a_branch_made_meanwhile_is_reused(
    github: FakeGitHub, record: Callable[[], CLIResult]
) -> None:
    # Another run created the branch between our look and our create: GET says 404,
    # POST /git/refs says 422 "Reference already exists".
    github.branches[BRANCH] = github.branches["main"]
    github.fail("GET", rf"/git/ref/heads/{BRANCH}", 404, body={"message": "Not Found"})
    result = record()
    assert result.exit_code == 0, result.stderr
    assert "POST /repos/acme/models/git/refs" in github.api_requests
    assert pinned(github.file_at(BRANCH, CATALOG))["digest"] == DIGEST
    assert len(github.pulls) == 1


def test_a_lost_response_to_the_commit_is_read_again(
    github: FakeGitHub, record: Callable[[], CLIResult]
) -> None:
    # The PUT lands but its answer is lost; PyGithub retries it (PUT is idempotent to
    # it) with the blob sha that is now stale: 409 "does not match". The command reads
    # the file again, finds it pinned, and goes on.
    github.fail("PUT", rf"/contents/{CATALOG}", 502, after=True)
    result = record()
    assert result.exit_code == 0, result.stderr
    puts = [r for r in github.api_requests if r.startswith("PUT ")]
    assert len(puts) == 2
    assert len(github.log(BRANCH)) == 2  # one commit on main's head, not two
    pull = result.json()["pull_request"]
    assert isinstance(pull, dict) and pull["committed"] is True


def test_a_lost_pull_request_response_fails_and_the_rerun_finds_it(
    github: FakeGitHub, record: Callable[[], CLIResult]
) -> None:
    # POST is never retried blindly: the run fails (remote, 14) and the rerun finds the
    # pull request the lost response had created, instead of opening a second one.
    github.fail("POST", r"/pulls", 502, after=True)
    first = record()
    assert first.exit_code == 14, first.stdout
    assert len(github.pulls) == 1
    second = record()
    assert second.exit_code == 0, second.stderr
    pull = second.json()["pull_request"]
    assert isinstance(pull, dict) and pull["created"] is False
    assert len(github.pulls) == 1


def test_a_pull_request_race_on_create_is_reused(
    github: FakeGitHub, record: Callable[[], CLIResult]
) -> None:
    # The list showed none, the create says 422 "A pull request already exists".
    assert record().exit_code == 0
    github.fail("GET", r"/pulls", 200, body=[])
    result = record()
    assert result.exit_code == 0, result.stderr
    assert "POST /repos/acme/models/pulls" in github.api_requests  # refused: 422
    assert len(github.pulls) == 1
    pull = result.json()["pull_request"]
    assert isinstance(pull, dict) and pull["created"] is False


def test_actions_not_allowed_to_open_pull_requests_says_which_setting(
    github: FakeGitHub, record: Callable[[], CLIResult]
) -> None:
    github.actions_may_create_pulls = False
    result = record()
    assert result.exit_code == 15, result.stdout
    error = result.json()["error"]
    assert isinstance(error, dict)
    assert "not permitted to create" in str(error["message"])
    assert "Allow GitHub Actions to create and approve pull requests" in str(error["fix"])
    assert BRANCH in github.branches and not github.pulls  # the branch waits for it
    github.actions_may_create_pulls = True
    assert record().exit_code == 0
    assert len(github.pulls) == 1


def test_a_token_without_contents_write_names_the_permission(
    github: FakeGitHub, record: Callable[[], CLIResult]
) -> None:
    github.token_permissions["contents"] = "read"
    result = record()
    assert result.exit_code == 15
    error = result.json()["error"]
    assert isinstance(error, dict)
    assert "contents: write" in str(error["fix"])
    assert BRANCH not in github.branches and not github.pulls


def test_an_older_build_of_the_same_base_is_named_as_superseded(
    github: FakeGitHub, record: Callable[[], CLIResult]
) -> None:
    older = "bases/c2-cascadelake-0123456789ab"
    github.branches[older] = github.branches["main"]
    github.add_pull_request(41, head_sha=github.branches["main"])
    github.pulls[41].head_ref = older
    unrelated = "bases/c3-sapphirerapids-0123456789ab"
    github.branches[unrelated] = github.branches["main"]
    github.add_pull_request(42, head_sha=github.branches["main"])
    github.pulls[42].head_ref = unrelated
    result = record()
    assert result.exit_code == 0, result.stderr
    pull = result.json()["pull_request"]
    assert isinstance(pull, dict) and pull["supersedes"] == [41]
    created = github.pulls[int(str(pull["number"]))]
    assert "Supersedes #41" in created.body and "#42" not in created.body


def test_the_workflow_chain_wait_output_to_record(
    github: FakeGitHub, cli: Callable[..., CLIResult], tmp_path: Path
) -> None:
    # What the pull-request job does with the build job's `build` output: the trimmed
    # resource, written to a file, recorded.
    from scripts.image.base_build import CloudBuild

    build = CloudBuild.from_json(json.loads(FIXTURE.read_text()), "fixture")
    path = tmp_path / "build.json"
    path.write_text(json.dumps(build.resource(), separators=(",", ":")) + "\n")
    tree = tmp_path / "tree"
    tree.mkdir()
    shutil.copy(REPO_ROOT / CATALOG, tree / "bases.yaml")
    result = cli("bases", "record", "--base", "c2-cascadelake", "--build-json", path,
                 "--kustomize-dir", tree, "--open-pr", "--json")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert pinned(github.file_at(BRANCH, CATALOG))["digest"] == DIGEST


def test_a_rerun_after_the_merge_opens_nothing(
    github: FakeGitHub, record: Callable[[], CLIResult]
) -> None:
    assert record().exit_code == 0
    # Merged (the branch's tree becomes main's), the branch deleted, the pull request closed.
    github.branches["main"] = github.branches.pop(BRANCH)
    [pull] = github.pulls.values()
    pull.state = "closed"
    github.api_requests.clear()
    result = record()
    assert result.exit_code == 0, result.stderr
    data = result.json()["pull_request"]
    assert isinstance(data, dict) and data["already_pinned"] is True and data["number"] is None
    assert BRANCH not in github.branches and len(github.pulls) == 1
    assert [r for r in github.api_requests if not r.startswith("GET ")] == []
