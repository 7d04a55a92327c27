"""Optimised serving bases: TF Serving compiled on Cloud Build for a machine family.

A base of ``kustomize/bases.yaml`` with a ``build:`` block (``tf_serving_version``,
``march``) is built by ``cloudbuild/tf-serving-base.yaml``, started by the ``base image``
workflow (docs/images.md, "Building an optimised base"). This module is that workflow's
logic, so that the workflow stays a list of commands:

* :func:`plan_build` — the base → the Cloud Build substitutions (``_TF_SERVING_VERSION``,
  ``_MARCH``, ``_IMAGE``), refusing a base that has no ``build:``;
* :func:`wait_for_build` — follow a submitted build (``gcloud builds describe``) until it
  ends, for hours if need be, riding out passing failures of the poll;
* :func:`judge_build` — a Build resource (``gcloud builds submit|describe --format=json``)
  → the pushed image and its digest: the status must be ``SUCCESS``, the build must be
  this base's (its substitutions), and ``results.images[]`` must hold the image, with one
  well-formed digest;
* :func:`record_build` — write that digest into the catalog (``set_base_digest``, which
  keeps the file's comments); opening the pull request is ``scripts/github/base_pr.py``.

Errors: a base without ``build:``, a malformed repository or a build that is not this
base's → UsageError (2); a build that failed, timed out or was cancelled →
ExternalCommandError (5); no pushed image in the results → ArtifactNotFoundError (10); a
malformed or ambiguous digest → IntegrityError (11); a poll that outlives ``--timeout`` →
PipelineTimeoutError (16).
"""

from __future__ import annotations

import json
import re
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scripts.atomic import write_text_atomic
from scripts.config import KUSTOMIZE_DIR, REPO_ROOT
from scripts.errors import (
    ArtifactNotFoundError,
    ExternalCommandError,
    IntegrityError,
    PipelineTimeoutError,
    UsageError,
)
from scripts.image.bases import (
    CATALOG_FILE,
    BaseBuild,
    BaseCatalog,
    load_catalog,
    set_base_digest,
)
from scripts.image.reference import DOCKER_HUB, ImageRef
from scripts.log import log

CLOUDBUILD_CONFIG = REPO_ROOT / "cloudbuild" / "tf-serving-base.yaml"
CATALOG_REPO_PATH = f"kustomize/{CATALOG_FILE}"  # where overlays read it, in the repository
# The substitutions the workflow passes for a base (cloudbuild/tf-serving-base.yaml).
VERSION_KEY, MARCH_KEY, IMAGE_KEY = "_TF_SERVING_VERSION", "_MARCH", "_IMAGE"
SUBSTITUTION_KEYS = (VERSION_KEY, MARCH_KEY, IMAGE_KEY)

# Build.Status (google.devtools.cloudbuild.v1).
SUCCESS = "SUCCESS"
RUNNING = frozenset({"STATUS_UNKNOWN", "PENDING", "QUEUED", "WORKING"})
FAILED = {
    "FAILURE": "a build step failed (the compiler, a download, or the push)",
    "INTERNAL_ERROR": "Cloud Build itself failed",
    "TIMEOUT": "the build ran longer than the config's `timeout`",
    "CANCELLED": "someone (or something) cancelled the build",
    "EXPIRED": "the build waited in the queue longer than the config's `queueTtl`",
}
_BUILD_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,127}$")  # a UUID in practice
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_LOCATION = re.compile(r"^projects/[^/]+/locations/([^/]+)/builds/")
GLOBAL = "global"
MAX_POLL_FAILURES = 5  # consecutive failed `gcloud builds describe` before giving up


def build_id(value: str) -> str:
    """A Cloud Build id as given on a command line or in a workflow input."""
    if not _BUILD_ID.match(value):
        raise UsageError(
            f"{value!r} is not a Cloud Build id",
            cause="a typo, or something other than the id (e.g. the log URL)",
            fix="pass the id `gcloud builds list` shows (a UUID such as "
            "3b8e0a52-0d0f-4c2e-9a57-6f3b1c2d4e5f)",
        )
    return value


# -- plan --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BuildPlan:
    """What Cloud Build compiles and pushes for one base."""

    base: str
    repository: str  # REGISTRY/REPO the image is pushed to
    tf_serving_version: str
    march: str

    @property
    def tag(self) -> str:
        return f"{self.tf_serving_version}-{self.march}"

    @property
    def image(self) -> str:
        """The tagged image the config pushes (``images:``)."""
        return f"{self.repository}:{self.tag}"

    def substitutions(self) -> dict[str, str]:
        return {
            VERSION_KEY: self.tf_serving_version,
            MARCH_KEY: self.march,
            IMAGE_KEY: self.repository,
        }

    def substitutions_flag(self) -> str:
        """``gcloud builds submit --substitutions`` (KEY=VALUE,…; no value has a comma)."""
        return ",".join(f"{k}={v}" for k, v in sorted(self.substitutions().items()))

    def to_dict(self) -> dict[str, object]:
        return {
            "base": self.base,
            "repository": self.repository,
            "tf_serving_version": self.tf_serving_version,
            "march": self.march,
            "image": self.image,
            "substitutions": self.substitutions(),
            "config": str(CLOUDBUILD_CONFIG.relative_to(REPO_ROOT)),
        }


def check_repository(value: str, *, what: str = "--repository") -> str:
    """REGISTRY/REPO, lower case, with an explicit registry and neither tag nor digest."""
    try:
        ref = ImageRef.parse(value)
    except UsageError as exc:
        raise UsageError(
            f"{what} {value!r} is not REGISTRY/REPOSITORY: {exc.what}",
            cause="an unset repository variable, the catalog's placeholder (PROJECT), or "
            "upper-case letters",
            fix="pass the Artifact Registry repository to push the base to, e.g. "
            "us-docker.pkg.dev/acme/serving-bases/tensorflow-serving (the workflow reads "
            "the variable SERVING_BASE_REPOSITORY)",
        ) from exc
    implicit_hub = ref.registry == DOCKER_HUB and not value.startswith(DOCKER_HUB)
    if ref.tag or ref.digest or implicit_hub:
        raise UsageError(
            f"{what} {value!r} must name a registry and a repository, without a tag or digest",
            cause="a tag or digest given, or no registry host (Docker Hub is not assumed here)",
            fix="e.g. us-docker.pkg.dev/acme/serving-bases/tensorflow-serving (the tag "
            "VERSION-MARCH is added by the build)",
        )
    return str(ref)


def build_spec(catalog: BaseCatalog, name: str) -> BaseBuild:
    """Base ``name``'s ``build:`` block; refuses an unknown base or one without it."""
    base = catalog.bases.get(name)
    buildable = sorted(n for n, b in catalog.bases.items() if b.build is not None)
    if base is None:
        raise UsageError(
            f"kustomize/bases.yaml has no base {name!r}",
            cause="a typo, or a base not added to the catalog yet",
            fix=f"name a base with a build: block: {', '.join(buildable) or '(none)'}",
        )
    if base.build is None:
        raise UsageError(
            f"base {name} has no build: block: it is not built from source here",
            cause="a stock or local base (an image built elsewhere, or an empty local one)",
            fix=f"name a base with a build: block ({', '.join(buildable) or 'none yet'}), "
            "or add one to kustomize/bases.yaml (docs/images.md, 'Building an optimised base')",
        )
    if base.build.march == "native":
        raise UsageError(
            f"base {name} has march: native, which compiles for the build machine's CPU",
            cause="Cloud Build machines are of several CPU generations: the binary would "
            "differ from build to build, and could die with SIGILL on the nodes",
            fix="name the target CPU of the base's families, e.g. march: cascadelake for c2",
        )
    return base.build


def plan_build(catalog: BaseCatalog, name: str, repository: str | None = None) -> BuildPlan:
    """The substitutions for base ``name``; ``repository`` defaults to its ``image:``."""
    spec = build_spec(catalog, name)
    image = catalog.bases[name].image or ""  # the catalog's validator: build: needs image:
    target = repository or image.split("@", 1)[0]
    return BuildPlan(
        base=name,
        repository=check_repository(
            target, what="--repository" if repository else f"{name}'s image:"
        ),
        tf_serving_version=spec.tf_serving_version,
        march=spec.march,
    )


# -- the Build resource ------------------------------------------------------------------------
@dataclass(frozen=True)
class CloudBuild:
    """The parts of a Cloud Build ``Build`` resource (its JSON, camelCase) used here."""

    id: str
    status: str
    project: str | None = None
    region: str = GLOBAL
    status_detail: str = ""
    failure: str = ""  # failureInfo: TYPE: detail
    log_url: str = ""
    substitutions: Mapping[str, str] = field(default_factory=dict)
    images: tuple[tuple[str, str], ...] = ()  # results.images[]: (name, digest)
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @property
    def finished(self) -> bool:
        return self.status not in RUNNING

    @classmethod
    def from_json(cls, data: Any, source: str) -> CloudBuild:
        """A Build, or the Operation ``gcloud builds submit --async`` may wrap it in."""
        if isinstance(data, list) and len(data) == 1:
            data = data[0]
        if isinstance(data, dict) and isinstance(data.get("metadata"), dict):
            data = data["metadata"].get("build", data)
        if not isinstance(data, dict) or not isinstance(data.get("id"), str):
            raise UsageError(
                f"{source} is not a Cloud Build Build resource (no `id`)",
                cause="another command's output, or gcloud without --format=json",
                fix="pass the output of `gcloud builds submit --format=json` or "
                "`gcloud builds describe ID --format=json`",
            )
        results = data.get("results") or {}
        images = tuple(
            (str(image.get("name", "")), str(image.get("digest", "")))
            for image in (results.get("images") or [])
            if isinstance(image, dict)
        )
        failure_info = data.get("failureInfo") or {}
        failure = ": ".join(
            str(part) for part in (failure_info.get("type"), failure_info.get("detail")) if part
        )
        location = _LOCATION.match(str(data.get("name", "")))
        return cls(
            id=build_id(data["id"]),
            status=str(data.get("status", "STATUS_UNKNOWN")),
            project=str(data["projectId"]) if data.get("projectId") else None,
            region=location.group(1) if location else GLOBAL,
            status_detail=str(data.get("statusDetail", "")),
            failure=failure,
            log_url=str(data.get("logUrl", "")),
            substitutions={str(k): str(v) for k, v in (data.get("substitutions") or {}).items()},
            images=images,
            raw=data,
        )

    @classmethod
    def from_file(cls, path: Path) -> CloudBuild:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageError(
                f"cannot read the build JSON {path}: {exc.strerror or exc}",
                cause="the step that writes it did not run, or wrote elsewhere",
                fix="pass the file `gcloud builds submit|describe --format=json` wrote",
            ) from exc
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UsageError(
                f"{path} is not JSON: {exc}",
                cause="gcloud printed a table or an error instead (no --format=json?)",
                fix="write it with `gcloud builds describe ID --format=json > FILE`",
            ) from exc
        return cls.from_json(data, str(path))

    def resource(self) -> dict[str, Any]:
        """The fields read here, in the Build resource's own shape (from_json reads it)."""
        keep = ("id", "name", "projectId", "status", "statusDetail", "failureInfo", "logUrl")
        resource = {k: self.raw[k] for k in keep if k in self.raw}
        resource["substitutions"] = dict(self.substitutions)
        resource["results"] = {"images": [{"name": n, "digest": d} for n, d in self.images]}
        return resource

    def summary(self) -> dict[str, object]:
        return {
            "id": self.id,
            "status": self.status,
            "project": self.project,
            "region": self.region,
            "log_url": self.log_url,
            "images": [{"name": n, "digest": d} for n, d in self.images],
        }


# -- wait --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BuildRef:
    """Where to ask about a build: ``gcloud builds describe ID --project P --region R``."""

    id: str
    project: str | None
    region: str = GLOBAL


def gcloud_describe(ref: BuildRef) -> Any:
    """The Build resource, as ``gcloud builds describe --format=json`` prints it."""
    from scripts.process import find_program, run

    gcloud = find_program(
        "gcloud", hint="install the Google Cloud CLI (GitHub's ubuntu runners have it)"
    )
    args = [gcloud, "builds", "describe", ref.id, f"--region={ref.region}", "--format=json"]
    if ref.project:
        args.append(f"--project={ref.project}")
    out = run(args, what=f"gcloud builds describe {ref.id}", timeout=120)
    try:
        return json.loads(out)
    except json.JSONDecodeError as exc:
        raise ExternalCommandError(
            f"gcloud builds describe {ref.id} printed no JSON: {exc}",
            cause="a gcloud that ignores --format (a very old one), or a warning on stdout",
            fix="run it by hand with --format=json",
        ) from exc


def wait_for_build(
    ref: BuildRef,
    *,
    timeout_s: float,
    poll_s: float = 60.0,
    describe: Callable[[BuildRef], Any] = gcloud_describe,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> CloudBuild:
    """Poll the build until it ends (any status but PENDING, QUEUED, WORKING).

    A poll that fails (gcloud's exit, a network error) is retried: a few hours of
    polling meet passing failures. ``MAX_POLL_FAILURES`` in a row end the wait.
    Each ``gcloud`` call refreshes its own credentials, so a poll can outlive the one
    hour of one access token (docs/images.md)."""
    deadline = clock() + timeout_s
    failures = 0
    last: str | None = None
    while True:
        try:
            build = CloudBuild.from_json(describe(ref), f"gcloud builds describe {ref.id}")
        except (ExternalCommandError, UsageError) as exc:
            failures += 1
            if failures >= MAX_POLL_FAILURES:
                raise ExternalCommandError(
                    f"could not read build {ref.id} {failures} times in a row: {exc.what}",
                    cause="the build id, project or region is wrong, or the credentials lack "
                    "cloudbuild.builds.get",
                    fix=f"check with `gcloud builds describe {ref.id} --region={ref.region}`; "
                    "the build goes on in Cloud Build whatever happens here",
                ) from exc
            log.warning("reading build %s failed (%d in a row): %s", ref.id, failures, exc.what)
        else:
            failures = 0
            if build.status != last:
                log.info(
                    "build %s: %s%s",
                    build.id,
                    build.status,
                    f" — logs: {build.log_url}" if last is None and build.log_url else "",
                )
                last = build.status
            if build.finished:
                return build
        remaining = deadline - clock()
        if remaining <= 0:
            raise PipelineTimeoutError(
                f"build {ref.id} was still {last or 'unread'} after {timeout_s:.0f} s",
                cause="a long queue, or a build slower than this wait (the build's own "
                "timeout is in cloudbuild/tf-serving-base.yaml)",
                fix=f"the build goes on: run the workflow again with build-id={ref.id} to "
                "wait for it and record it, or cancel it with `gcloud builds cancel`",
            )
        sleep(min(poll_s, remaining))


# -- judge and record --------------------------------------------------------------------------
@dataclass(frozen=True)
class BuiltBase:
    """A base that Cloud Build built and pushed: what the catalog gets."""

    plan: BuildPlan
    digest: str
    build: CloudBuild

    @property
    def pinned(self) -> str:
        return f"{self.plan.repository}@{self.digest}"

    def to_dict(self) -> dict[str, object]:
        return {
            **self.plan.to_dict(),
            "digest": self.digest,
            "pinned": self.pinned,
            "build": self.build.summary(),
        }


def judge_build(catalog: BaseCatalog, name: str, build: CloudBuild) -> BuiltBase:
    """The base ``name`` as ``build`` pushed it; every way it can be wrong is an error."""
    if not build.finished:
        raise UsageError(
            f"build {build.id} has not finished: it is {build.status}",
            cause="the JSON of `gcloud builds submit --async`, read before the build ended",
            fix=f"wait for it: python -m scripts bases wait --base {name} --build-id "
            f"{build.id} --out build.json, then record build.json",
        )
    if build.status != SUCCESS:
        detail = "; ".join(p for p in (build.status_detail, build.failure) if p)
        raise ExternalCommandError(
            f"Cloud Build {build.id} ended {build.status}"
            + (f": {detail}" if detail else "")
            + (f" (logs: {build.log_url})" if build.log_url else ""),
            cause=FAILED.get(build.status, "an unknown build status"),
            fix="read the build's logs; fix the cause and run the workflow again (nothing "
            "was recorded)",
        )
    spec = build_spec(catalog, name)
    given = build.substitutions
    wanted = {VERSION_KEY: spec.tf_serving_version, MARCH_KEY: spec.march}
    mismatched = {k: given.get(k) for k, v in wanted.items() if given.get(k) != v}
    if mismatched or not given.get(IMAGE_KEY):
        raise UsageError(
            f"build {build.id} is not base {name}'s: it was given "
            + ", ".join(f"{k}={v}" for k, v in mismatched.items())
            + ("" if given.get(IMAGE_KEY) else f"{', ' if mismatched else ''}no {IMAGE_KEY}")
            + f"; kustomize/bases.yaml wants TF Serving {spec.tf_serving_version}, "
            f"-march={spec.march}",
            cause="another base's build, one started before the catalog changed, or one "
            "not started from cloudbuild/tf-serving-base.yaml",
            fix=f"record it under its own base, or build {name} again",
        )
    plan = BuildPlan(
        base=name,
        repository=check_repository(given[IMAGE_KEY], what=f"the build's {IMAGE_KEY}"),
        tf_serving_version=spec.tf_serving_version,
        march=spec.march,
    )
    pushed = [(n, d) for n, d in build.images if n == plan.image]
    if not pushed:  # an entry without the tag names the same push
        pushed = [(n, d) for n, d in build.images if n.rsplit(":", 1)[0] == plan.repository]
    if not pushed:
        found = ", ".join(n for n, _ in build.images) or "none"
        raise ArtifactNotFoundError(
            f"build {build.id} succeeded but its results list no image {plan.image} "
            f"(results.images: {found})",
            cause="a build config without `images:`, or one that pushed elsewhere",
            fix="push the image through the config's `images:` (cloudbuild/tf-serving-base.yaml) "
            "so that the build's results carry its digest",
        )
    digests = sorted({d for _, d in pushed})
    if len(digests) != 1 or not _DIGEST.match(digests[0]):
        raise IntegrityError(
            f"build {build.id} reports {'digests' if len(digests) > 1 else 'digest'} "
            f"{', '.join(repr(d) for d in digests)} for {plan.image}: expected one "
            "sha256:<64 hex>",
            cause="a damaged or hand-edited build JSON",
            fix=f"read it again: gcloud builds describe {build.id} --format=json",
        )
    return BuiltBase(plan=plan, digest=digests[0], build=build)


@dataclass(frozen=True)
class RecordResult:
    built: BuiltBase
    path: Path
    changed: bool  # the file was rewritten (False: it already held this digest)

    def to_dict(self) -> dict[str, object]:
        return {**self.built.to_dict(), "catalog": str(self.path), "changed": self.changed}


def pinned_text(text: str, built: BuiltBase) -> str:
    """``text`` (a catalog's contents) with the base pinned to the build's digest."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / CATALOG_FILE
        path.write_text(text, encoding="utf-8")
        return set_base_digest(
            path, built.plan.base, image=built.plan.repository, digest=built.digest
        )


def record_build(name: str, build: CloudBuild, kustomize_dir: Path = KUSTOMIZE_DIR) -> RecordResult:
    """Judge ``build`` and pin base ``name`` to its digest in ``kustomize_dir/bases.yaml``."""
    path = kustomize_dir / CATALOG_FILE
    built = judge_build(load_catalog(kustomize_dir), name, build)
    old = path.read_text(encoding="utf-8")
    new = pinned_text(old, built)
    if new != old:
        write_text_atomic(path, new)
    log.info("%s: %s → %s%s", name, path, built.pinned, "" if new != old else " (already recorded)")
    return RecordResult(built=built, path=path, changed=new != old)


def catalog_listing(catalog: BaseCatalog) -> list[dict[str, object]]:
    """The catalog as ``bases list`` prints it."""
    rows: list[dict[str, object]] = []
    for name, base in sorted(catalog.bases.items()):
        rows.append(
            {
                "name": name,
                "default": name == catalog.default,
                "image": base.image,
                "digest": base.digest,
                "kind": "local" if base.env is not None else "built" if base.build else "image",
                "families": list(base.families),
                "cpu_features": list(base.cpu_features),
                "build": base.build.model_dump() if base.build else None,
                "usable": base.build is None or base.digest is not None,
            }
        )
    return rows
