"""`bases plan|wait|record|list` and scripts/image/base_build.py, without the cloud.

The Build resources are tests/data/cloudbuild/build-success.json (the API's shape; it
parses strictly into the API's Build message, tests/unit/test_cloudbuild.py) and copies of
it in the other states a build ends in. `gcloud` is a stub on PATH that answers `builds
describe` from a script of states.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from scripts.errors import (
    ArtifactNotFoundError,
    ExternalCommandError,
    IntegrityError,
    PipelineTimeoutError,
    UsageError,
)
from scripts.image.base_build import (
    BuildRef,
    CloudBuild,
    judge_build,
    plan_build,
    record_build,
    wait_for_build,
)
from scripts.image.bases import load_catalog
from tests.conftest import REPO_ROOT, CLIResult

FIXTURE = REPO_ROOT / "tests" / "data" / "cloudbuild" / "build-success.json"
REPOSITORY = "us-docker.pkg.dev/acme-ml/serving-bases/tensorflow-serving"
DIGEST = "sha256:4f1c7e0b9a2d3c5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6"
BUILD_ID = "3b8e0a52-0d0f-4c2e-9a57-6f3b1c2d4e5f"


def success() -> dict[str, Any]:
    data = json.loads(FIXTURE.read_text())
    assert isinstance(data, dict)
    return data


def with_status(status: str, **extra: Any) -> dict[str, Any]:
    data = success()
    data["status"] = status
    if status != "SUCCESS":
        data["results"].pop("images", None)
    data.update(extra)
    return data


@pytest.fixture
def kustomize(tmp_path: Path) -> Path:
    """A copy of the catalog: the tests rewrite it, never the checkout's."""
    tree = tmp_path / "kustomize"
    tree.mkdir()
    shutil.copy(REPO_ROOT / "kustomize" / "bases.yaml", tree / "bases.yaml")
    return tree


def write(tmp_path: Path, data: Any, name: str = "build.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


# -- plan ------------------------------------------------------------------------------------
def test_plan_gives_the_substitutions_of_a_buildable_base() -> None:
    plan = plan_build(load_catalog(), "c2-cascadelake", REPOSITORY)
    assert plan.substitutions() == {
        "_TF_SERVING_VERSION": "2.20.0",
        "_MARCH": "cascadelake",
        "_IMAGE": REPOSITORY,
    }
    assert plan.image == f"{REPOSITORY}:2.20.0-cascadelake"
    assert plan.substitutions_flag() == (
        f"_IMAGE={REPOSITORY},_MARCH=cascadelake,_TF_SERVING_VERSION=2.20.0"
    )


@pytest.mark.parametrize(
    ("base", "repository", "says"),
    [
        ("stock", REPOSITORY, "has no build: block"),
        ("local-onednn", REPOSITORY, "has no build: block"),
        ("c9-imaginary", REPOSITORY, "has no base 'c9-imaginary'"),
        ("c2-cascadelake", None, "PROJECT"),  # the catalog's placeholder image:
        ("c2-cascadelake", f"{REPOSITORY}:latest", "without a tag or digest"),
        ("c2-cascadelake", "serving-bases/tensorflow-serving", "must name a registry"),
        ("c2-cascadelake", "us-docker.pkg.dev/Acme/x", "not REGISTRY/REPOSITORY"),
    ],
)
def test_plan_refuses_what_cannot_be_built(
    cli: Callable[..., CLIResult], base: str, repository: str | None, says: str
) -> None:
    args = ["bases", "plan", "--base", base, "--json"]
    if repository is not None:
        args += ["--repository", repository]
    result = cli(*args)
    assert result.exit_code == 2, result.stdout
    error = result.json()["error"]
    assert isinstance(error, dict)
    assert says in str(error["message"])
    assert error["kind"] == "usage" and error["cause"] and error["fix"]


def test_plan_refuses_march_native(kustomize: Path, cli: Callable[..., CLIResult]) -> None:
    path = kustomize / "bases.yaml"
    path.write_text(path.read_text().replace("march: cascadelake", "march: native"))
    result = cli("bases", "plan", "--base", "c2-cascadelake", "--repository", REPOSITORY,
                 "--kustomize-dir", kustomize, "--json")  # fmt: skip
    assert result.exit_code == 2
    assert "build machine's CPU" in str(result.json()["error"])


def test_plan_writes_the_substitutions_to_github_output(
    cli: Callable[..., CLIResult], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    outputs = tmp_path / "github_output"
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_OUTPUT", str(outputs))
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    result = cli("bases", "plan", "--base", "c3-sapphirerapids", "--repository", REPOSITORY,
                 "--json")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    lines = dict(line.split("=", 1) for line in outputs.read_text().splitlines())
    assert lines["substitutions"] == (
        f"_IMAGE={REPOSITORY},_MARCH=sapphirerapids,_TF_SERVING_VERSION=2.20.0"
    )
    assert lines["image"] == f"{REPOSITORY}:2.20.0-sapphirerapids"
    assert result.json()["substitutions"] == {
        "_IMAGE": REPOSITORY,
        "_MARCH": "sapphirerapids",
        "_TF_SERVING_VERSION": "2.20.0",
    }


def test_list_prints_the_catalog(cli: Callable[..., CLIResult]) -> None:
    result = cli("bases", "list", "--json")
    assert result.exit_code == 0, result.stderr
    data = result.json()
    rows = {r["name"]: r for r in data["bases"]}  # type: ignore[attr-defined]
    assert rows["c2-cascadelake"]["build"] == {
        "tf_serving_version": "2.20.0",
        "march": "cascadelake",
    }
    assert rows["c2-cascadelake"]["families"] == ["c2"]
    assert "avx512_vnni" in rows["c2-cascadelake"]["cpu_features"]
    assert rows["stock"]["kind"] == "image" and rows["local-eigen"]["kind"] == "local"
    assert data["default"] == "stock"
    text = cli("bases", "list").stdout
    assert "c2-cascadelake" in text


# -- the Build resource ----------------------------------------------------------------------
def test_a_build_resource_is_read_with_its_region_and_images() -> None:
    build = CloudBuild.from_json(success(), "fixture")
    assert build.id == BUILD_ID and build.status == "SUCCESS" and build.finished
    assert build.project == "acme-ml" and build.region == "global"
    assert build.images == ((f"{REPOSITORY}:2.20.0-cascadelake", DIGEST),)
    assert build.log_url.startswith("https://console.cloud.google.com/cloud-build/builds")
    # The trimmed resource (a job output) reads back to the same.
    again = CloudBuild.from_json(json.loads(json.dumps(build.resource())), "output")
    assert (again.id, again.status, again.images, dict(again.substitutions)) == (
        build.id,
        build.status,
        build.images,
        dict(build.substitutions),
    )


def test_the_operation_of_an_async_submit_is_read_too() -> None:
    build = with_status("QUEUED", name=f"projects/1/locations/europe-west4/builds/{BUILD_ID}")
    operation = {
        "name": f"projects/1/locations/europe-west4/operations/op-{BUILD_ID}",
        "metadata": {
            "@type": "type.googleapis.com/google.devtools.cloudbuild.v1.BuildOperationMetadata",
            "build": build,
        },
    }
    read = CloudBuild.from_json(operation, "submit")
    assert read.id == BUILD_ID and read.region == "europe-west4" and not read.finished


@pytest.mark.parametrize(
    ("text", "says"),
    [("not json", "is not JSON"), ('{"status": "SUCCESS"}', "no `id`"), ("[]", "no `id`")],
)
def test_a_file_that_is_no_build_is_a_usage_error(tmp_path: Path, text: str, says: str) -> None:
    path = tmp_path / "build.json"
    path.write_text(text)
    with pytest.raises(UsageError, match=says):
        CloudBuild.from_file(path)
    with pytest.raises(UsageError, match="cannot read"):
        CloudBuild.from_file(tmp_path / "missing.json")


# -- judge -----------------------------------------------------------------------------------
def test_judge_picks_the_pushed_image_and_its_digest() -> None:
    built = judge_build(load_catalog(), "c2-cascadelake", CloudBuild.from_json(success(), "f"))
    assert built.digest == DIGEST
    assert built.pinned == f"{REPOSITORY}@{DIGEST}"
    assert built.plan.march == "cascadelake"


def test_judge_falls_back_on_an_untagged_result_of_the_same_repository() -> None:
    data = success()
    data["results"]["images"] = [
        {"name": "us-docker.pkg.dev/acme-ml/other/thing:1", "digest": "sha256:" + "e" * 64},
        {"name": REPOSITORY, "digest": DIGEST},
    ]
    built = judge_build(load_catalog(), "c2-cascadelake", CloudBuild.from_json(data, "f"))
    assert built.digest == DIGEST


@pytest.mark.parametrize(
    ("status", "cause"),
    [
        ("FAILURE", "a build step failed"),
        ("INTERNAL_ERROR", "Cloud Build itself failed"),
        ("TIMEOUT", "`timeout`"),
        ("CANCELLED", "cancelled"),
        ("EXPIRED", "`queueTtl`"),
    ],
)
def test_a_build_that_did_not_succeed_is_an_external_command_error(status: str, cause: str) -> None:
    data = with_status(
        status,
        statusDetail='Build step failure: build step 2 "gcr.io/cloud-builders/docker" failed',
        failureInfo={"type": "USER_BUILD_STEP", "detail": "exit status 1"},
    )
    with pytest.raises(ExternalCommandError) as info:
        judge_build(load_catalog(), "c2-cascadelake", CloudBuild.from_json(data, "f"))
    assert info.value.exit_code == 5
    assert status in info.value.what and "USER_BUILD_STEP: exit status 1" in info.value.what
    assert data["logUrl"] in info.value.what
    assert cause in info.value.cause


@pytest.mark.parametrize("status", ["QUEUED", "WORKING", "PENDING"])
def test_a_build_still_running_cannot_be_recorded(status: str) -> None:
    with pytest.raises(UsageError, match=f"has not finished: it is {status}") as info:
        judge_build(
            load_catalog(), "c2-cascadelake", CloudBuild.from_json(with_status(status), "f")
        )
    assert "bases wait" in info.value.fix


def test_a_successful_build_without_the_image_is_not_found() -> None:
    data = success()
    data["results"]["images"] = [{"name": "us-docker.pkg.dev/acme-ml/x/y:1", "digest": DIGEST}]
    with pytest.raises(ArtifactNotFoundError, match="results list no image") as info:
        judge_build(load_catalog(), "c2-cascadelake", CloudBuild.from_json(data, "f"))
    assert info.value.exit_code == 10 and "us-docker.pkg.dev/acme-ml/x/y:1" in info.value.what
    del data["results"]
    with pytest.raises(ArtifactNotFoundError, match=r"results\.images: none"):
        judge_build(load_catalog(), "c2-cascadelake", CloudBuild.from_json(data, "f"))


@pytest.mark.parametrize(
    "digests",
    [["sha256:abc"], ["md5:" + "a" * 32], [DIGEST, "sha256:" + "f" * 64], [""]],
)
def test_a_malformed_or_ambiguous_digest_is_an_integrity_error(digests: list[str]) -> None:
    data = success()
    name = f"{REPOSITORY}:2.20.0-cascadelake"
    data["results"]["images"] = [{"name": name, "digest": d} for d in digests]
    with pytest.raises(IntegrityError) as info:
        judge_build(load_catalog(), "c2-cascadelake", CloudBuild.from_json(data, "f"))
    assert info.value.exit_code == 11


def test_another_bases_build_is_refused() -> None:
    build = CloudBuild.from_json(success(), "f")  # built -march=cascadelake
    with pytest.raises(UsageError, match=r"is not base c3-sapphirerapids's: .*_MARCH=cascadelake"):
        judge_build(load_catalog(), "c3-sapphirerapids", build)
    data = success()
    del data["substitutions"]["_IMAGE"]
    with pytest.raises(UsageError, match="no _IMAGE"):
        judge_build(load_catalog(), "c2-cascadelake", CloudBuild.from_json(data, "f"))


# -- record ----------------------------------------------------------------------------------
def test_record_pins_the_base_keeping_the_comments_and_is_idempotent(kustomize: Path) -> None:
    path = kustomize / "bases.yaml"
    before = path.read_text()
    build = CloudBuild.from_json(success(), "f")
    first = record_build("c2-cascadelake", build, kustomize)
    after = path.read_text()
    assert first.changed
    catalog = yaml.safe_load(after)["bases"]
    assert catalog["c2-cascadelake"]["digest"] == DIGEST
    assert catalog["c2-cascadelake"]["image"] == REPOSITORY
    assert catalog["c3-sapphirerapids"]["digest"] is None  # the other base untouched
    # Only the two lines of that base changed; every comment is kept.
    changed = [
        (a, b) for a, b in zip(before.splitlines(), after.splitlines(), strict=True) if a != b
    ]
    assert changed == [
        ("    image: us-docker.pkg.dev/PROJECT/serving-bases/tensorflow-serving",
         f"    image: {REPOSITORY}"),
        ("    digest: null", f"    digest: {DIGEST}"),
    ]  # fmt: skip
    assert [line for line in before.splitlines() if line.lstrip().startswith("#")] == [
        line for line in after.splitlines() if line.lstrip().startswith("#")
    ]
    again = record_build("c2-cascadelake", build, kustomize)
    assert not again.changed and path.read_text() == after
    # The pinned base is now usable by builds.
    from scripts.image.bases import choose_base

    chosen = choose_base(cli="c2-cascadelake", model_base=None, overlay=None,
                         kustomize_dir=kustomize)  # fmt: skip
    assert chosen.reference == f"{REPOSITORY}@{DIGEST}"


def test_record_of_a_failed_build_changes_nothing(
    kustomize: Path, tmp_path: Path, cli: Callable[..., CLIResult]
) -> None:
    before = (kustomize / "bases.yaml").read_text()
    build_json = write(tmp_path, with_status("FAILURE"))
    result = cli("bases", "record", "--base", "c2-cascadelake", "--build-json", build_json,
                 "--kustomize-dir", kustomize, "--json")  # fmt: skip
    assert result.exit_code == 5
    assert result.json()["error"]["kind"] == "external-command"  # type: ignore[index]
    assert (kustomize / "bases.yaml").read_text() == before


def test_record_through_the_cli(
    kustomize: Path, tmp_path: Path, cli: Callable[..., CLIResult]
) -> None:
    build_json = write(tmp_path, success())
    result = cli("bases", "record", "--base", "c2-cascadelake", "--build-json", build_json,
                 "--kustomize-dir", kustomize, "--json")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    data = result.json()
    assert data["digest"] == DIGEST and data["changed"] is True
    assert data["pinned"] == f"{REPOSITORY}@{DIGEST}"
    result = cli("bases", "record", "--base", "c2-cascadelake", "--build-json", build_json,
                 "--kustomize-dir", kustomize, "--open-pr", "--json")  # fmt: skip
    assert result.exit_code == 2  # --open-pr outside Actions: no GITHUB_REPOSITORY
    assert "GITHUB_REPOSITORY" in str(result.json()["error"])


# -- wait ------------------------------------------------------------------------------------
class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def describer(answers: list[Any]) -> Callable[[BuildRef], Any]:
    def describe(ref: BuildRef) -> Any:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    return describe


def test_wait_follows_the_build_to_its_end() -> None:
    clock = Clock()
    answers: list[Any] = [with_status("QUEUED"), with_status("WORKING"), with_status("WORKING")]
    answers.append(ExternalCommandError("gcloud builds describe failed (exit 1): 503"))
    answers.append(success())
    build = wait_for_build(
        BuildRef(BUILD_ID, "acme-ml"),
        timeout_s=3600,
        poll_s=60,
        describe=describer(answers),
        clock=clock.time,
        sleep=clock.sleep,
    )
    assert build.status == "SUCCESS" and not answers
    assert clock.sleeps == [60, 60, 60, 60]


def test_wait_gives_up_after_repeated_failures_to_read_the_build() -> None:
    clock = Clock()
    answers: list[Any] = [ExternalCommandError("PERMISSION_DENIED")] * 5
    with pytest.raises(ExternalCommandError, match="5 times in a row") as info:
        wait_for_build(BuildRef(BUILD_ID, "acme-ml"), timeout_s=3600, describe=describer(answers),
                       clock=clock.time, sleep=clock.sleep)  # fmt: skip
    assert "cloudbuild.builds.get" in info.value.cause


def test_wait_times_out_saying_how_to_pick_the_build_up_again() -> None:
    clock = Clock()
    with pytest.raises(PipelineTimeoutError) as info:
        wait_for_build(
            BuildRef(BUILD_ID, "acme-ml"),
            timeout_s=300,
            poll_s=120,
            describe=lambda ref: with_status("WORKING"),
            clock=clock.time,
            sleep=clock.sleep,
        )
    assert info.value.exit_code == 16
    assert f"build-id={BUILD_ID}" in info.value.fix
    assert clock.sleeps == [120, 120, 60]  # never past the deadline


@pytest.fixture
def gcloud(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A `gcloud` on PATH that answers `builds describe` with the next state in
    states.json and records its arguments."""
    bin_dir = tmp_path / "gcloud-bin"
    bin_dir.mkdir()
    script = bin_dir / "gcloud"
    script.write_text(
        f"#!{sys.executable}\n"
        "import json, pathlib, sys\n"
        f"here = pathlib.Path({str(tmp_path)!r})\n"
        "(here / 'gcloud.argv').open('a').write(json.dumps(sys.argv[1:]) + '\\n')\n"
        "states = json.loads((here / 'states.json').read_text())\n"
        "answer = states.pop(0) if len(states) > 1 else states[0]\n"
        "(here / 'states.json').write_text(json.dumps(states))\n"
        "if answer == 'fail':\n"
        "    sys.stderr.write('ERROR: (gcloud.builds.describe) NOT_FOUND\\n'); sys.exit(1)\n"
        "print(json.dumps(answer))\n"
    )
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{Path(sys.executable).parent}:/usr/bin:/bin")
    yield tmp_path


def test_wait_through_the_cli_with_gcloud(
    gcloud: Path, kustomize: Path, cli: Callable[..., CLIResult], monkeypatch: pytest.MonkeyPatch
) -> None:
    regional = f"projects/412345678901/locations/us-central1/builds/{BUILD_ID}"
    (gcloud / "states.json").write_text(
        json.dumps([with_status("WORKING", name=regional), success() | {"name": regional}])
    )
    submitted = write(gcloud, with_status("QUEUED", name=regional), "submitted.json")
    outputs = gcloud / "github_output"
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_OUTPUT", str(outputs))
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    done = gcloud / "done.json"
    result = cli("bases", "wait", "--base", "c2-cascadelake", "--build-json", submitted,
                 "--build-id", "", "--project", "acme-ml", "--poll", "0.01", "--out", done,
                 "--kustomize-dir", kustomize, "--json")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert result.json()["digest"] == DIGEST
    argv = [json.loads(line) for line in (gcloud / "gcloud.argv").read_text().splitlines()]
    assert argv[0] == ["builds", "describe", BUILD_ID, "--region=us-central1", "--format=json",
                       "--project=acme-ml"]  # fmt: skip
    assert json.loads(done.read_text())["status"] == "SUCCESS"
    lines = dict(line.split("=", 1) for line in outputs.read_text().splitlines())
    assert lines["digest"] == DIGEST and lines["build-id"] == BUILD_ID
    # The `build` output is what the pull-request job records from.
    assert CloudBuild.from_json(json.loads(lines["build"]), "output").images == (
        (f"{REPOSITORY}:2.20.0-cascadelake", DIGEST),
    )


def test_wait_for_a_failed_build_fails_with_its_logs(
    gcloud: Path, kustomize: Path, cli: Callable[..., CLIResult]
) -> None:
    (gcloud / "states.json").write_text(json.dumps([with_status("TIMEOUT")]))
    result = cli("bases", "wait", "--base", "c2-cascadelake", "--build-id", BUILD_ID,
                 "--poll", "0.01", "--kustomize-dir", kustomize, "--json")  # fmt: skip
    assert result.exit_code == 5
    assert "ended TIMEOUT" in str(result.json()["error"])


def test_wait_needs_a_build(cli: Callable[..., CLIResult]) -> None:
    result = cli("bases", "wait", "--base", "c2-cascadelake", "--json")
    assert result.exit_code == 2
    result = cli("bases", "wait", "--base", "c2-cascadelake", "--build-id", "--oops", "--json")
    assert result.exit_code == 2
    result = cli("bases", "wait", "--base", "c2-cascadelake", "--build-id", "a b", "--json")
    assert result.exit_code == 2 and "not a Cloud Build id" in result.stdout
