"""Preflight: before anything changes, check everything a delivery will need.

Each check reports what it found, and when it fails, the fix (the role to grant, the
asset to upload, the variable to set). Nothing is created: the registry push check
opens an upload session and cancels it; the Kubernetes checks ask the API server
what the identity may do (SelfSubjectAccessReview); the GitHub check asks for a
deployment of a ref that cannot exist (GitHub authorises before it validates).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from scripts.config import Settings
from scripts.errors import PipelineError
from scripts.log import log

# The verbs the deploy stage uses on every kind an overlay renders (server-side apply
# of a new object needs create as well as patch), and on the objects it reads or owns.
OBJECT_VERBS = ("get", "list", "create", "patch", "delete")
# What the deploy and the in-cluster load test do besides applying the rendered objects:
# read pods (rollout diagnosis, a several-pod canary's addresses), their events and (the
# generator's results) their logs; run the generator
# Job and its Service; hold the deploy Lease; look for an autoscaler.
FIXED_NEEDS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("", "pods", ("get", "list")),
    ("", "pods/log", ("get",)),
    ("", "events", ("list",)),
    ("", "services", OBJECT_VERBS),
    ("batch", "jobs", ("get", "list", "create", "delete")),
    ("coordination.k8s.io", "leases", ("get", "create", "update", "delete")),
    # Is the stable Deployment autoscaled (a live HPA)? Then replicas are left to it.
    ("autoscaling", "horizontalpodautoscalers", ("list",)),
)
GKE_ROLE = "roles/container.developer"
AR_ROLE = "roles/artifactregistry.writer"


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    skipped: bool = False


@dataclass(frozen=True)
class PreflightRequest:
    target: str  # k8s | local
    source: str | None
    expected_sha256: str | None
    overlay: str
    model: str | None
    image_repo: str | None
    base: str | None
    platform: str
    environment: str | None
    namespace: str | None
    kubeconfig: Path | None
    context: str | None
    insecure_registry: bool
    github_repository: str | None
    github_ref: str | None
    asset_wait_s: float = 0.0


@dataclass
class PreflightReport:
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok or c.skipped for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "checks": [asdict(c) for c in self.checks]}

    def markdown(self) -> str:
        icon = {True: "✅", False: "❌"}
        lines = [
            f"### {'✅ Preflight passed' if self.ok else '❌ Preflight failed'}",
            "",
            "| check | result | detail | fix |",
            "|---|---|---|---|",
        ]
        for c in self.checks:
            mark = "⏭️ skipped" if c.skipped else icon[c.ok]
            lines.append(f"| {c.name} | {mark} | {c.detail} | {c.fix} |")
        return "\n".join(lines) + "\n"


def _guard(name: str, check: Callable[[], Check]) -> Check:
    """Run one check; a PipelineError becomes a failed check carrying its fix."""
    try:
        return check()
    except PipelineError as exc:
        return Check(name, False, exc.what + (f" ({exc.cause})" if exc.cause else ""), exc.fix)


# -- the archive ------------------------------------------------------------------------
def check_archive(request: PreflightRequest, settings: Settings) -> Check:
    from scripts.artifact.fetch import normalise_sha256

    name = "archive"
    if not request.source:
        return Check(name, True, "no archive: delivering an image built before", skipped=True)
    expected = normalise_sha256(request.expected_sha256)
    if request.source.startswith("github://"):
        return _github_archive(request, settings, expected)
    from scripts.artifact.sources import FetchContext, parse_source
    from scripts.transfer import RetryPolicy

    ctx = FetchContext(
        settings=settings,
        retry=RetryPolicy(attempts=3),
        asset_wait_s=request.asset_wait_s,
        rate_limit_max_wait_s=30.0,
        progress=False,
    )
    with tempfile.TemporaryDirectory() as tmp:
        downloaded = parse_source(request.source).fetch(Path(tmp), ctx)
    if expected and downloaded.sha256 != expected:
        return Check(
            name,
            False,
            f"{request.source} hashes to sha256:{downloaded.sha256}, expected sha256:{expected}",
            "publish the checksum of this very archive (package writes NAME-VERSION.tar.gz.sha256)",
        )
    checked = "checksum matches" if expected else "no checksum given: --sha256 to verify"
    return Check(name, True, f"{request.source}: {downloaded.size} bytes, {checked}")


def _github_archive(request: PreflightRequest, settings: Settings, expected: str | None) -> Check:
    """A release asset, checked without downloading it (GitHub advertises its digest)."""
    from urllib.parse import urlsplit

    from scripts.artifact.github_release import GitHubReleaseSource
    from scripts.github.client import GitHubApi
    from scripts.github.tags import parse_checksum_file

    source = GitHubReleaseSource.from_uri(urlsplit(request.source or ""), request.source or "")
    with GitHubApi(settings, source.full_name) as api:
        release = api.release(int(source.release) if source.release.isdigit() else source.release)
        assets = {a.name: a for a in api.assets(release)}
        asset = assets.get(source.asset)
        if asset is None or asset.state != "uploaded":
            return Check(
                "archive",
                False,
                f"release {release.tag_name} has no uploaded asset {source.asset!r} "
                f"(assets: {', '.join(sorted(assets)) or 'none'})",
                f"upload {source.asset} and {source.asset}.sha256 to the release",
            )
        if expected is None and f"{source.asset}.sha256" in assets:
            expected = parse_checksum_file(
                api.asset_text(assets[f"{source.asset}.sha256"]), source.asset
            )
        advertised = (asset.digest or "").removeprefix("sha256:") or None
    if expected is None:
        return Check(
            "archive",
            False,
            f"{source.asset} exists, but no checksum to verify it against",
            f"upload {source.asset}.sha256 (package writes it), or pass --sha256",
        )
    if advertised and advertised != expected:
        return Check(
            "archive",
            False,
            f"GitHub's digest of {source.asset} is sha256:{advertised}; its .sha256 says "
            f"sha256:{expected}",
            "re-upload the archive and the checksum from the same `package` run",
        )
    how = "GitHub's digest matches" if advertised else "to be verified on download"
    return Check("archive", True, f"{source.asset} ({asset.size} bytes), checksum {how}")


# -- the registry -----------------------------------------------------------------------
def check_registry(request: PreflightRequest, settings: Settings) -> Check:
    from scripts.image.auth import CredentialStore
    from scripts.image.reference import ImageRef, is_layout
    from scripts.image.registry import client_for

    name = "registry push"
    if not request.image_repo or is_layout(request.image_repo):
        return Check(name, True, "a local OCI layout: nothing to push", skipped=True)
    ref = ImageRef.parse(request.image_repo)
    creds = CredentialStore(settings.docker_config)
    try:
        with client_for(ref, creds, insecure=request.insecure_registry) as client:
            client.check_push(ref.repository)
    except PipelineError as exc:
        fix = exc.fix
        if ref.registry.endswith(".pkg.dev"):
            fix = f"grant {AR_ROLE} on the repository to the workflow's service account ({fix})"
        return Check(name, False, exc.what, fix)
    return Check(name, True, f"may push to {ref.registry}/{ref.repository}")


def check_base(request: PreflightRequest, settings: Settings) -> Check:
    from scripts.image.auth import CredentialStore
    from scripts.image.base import Platform, resolve_base
    from scripts.image.defaults import DEFAULT_BASE
    from scripts.image.reference import SCRATCH, ImageRef, is_layout
    from scripts.image.registry import client_for

    base = request.base or DEFAULT_BASE
    name = "base image"
    platform = Platform.parse(request.platform)
    if base == SCRATCH or is_layout(base):
        resolved = resolve_base(base, platform, None)
        return Check(name, True, f"{resolved.display} for {platform}")
    ref = ImageRef.parse(base)
    creds = CredentialStore(settings.docker_config)
    with client_for(ref, creds, insecure=request.insecure_registry) as client:
        resolved = resolve_base(base, platform, client)
    return Check(name, True, f"{resolved.display} resolves for {platform}")


# -- the overlay and the cluster ----------------------------------------------------------
def check_render(request: PreflightRequest) -> tuple[Check, list[dict[str, Any]]]:
    from scripts.manifests.render import RenderRequest, render

    probe = "preflight.invalid/model@sha256:" + "0" * 64
    rendered = render(RenderRequest(overlay=request.overlay, image=probe, model=request.model))
    kinds = sorted({o["kind"] for o in rendered.objects})
    detail = f"{request.overlay}: {len(rendered.objects)} objects ({', '.join(kinds)}), valid"
    return Check("overlay", True, detail), rendered.objects


def _needs(objects: list[dict[str, Any]]) -> list[tuple[str, str, tuple[str, ...]]]:
    from scripts.deploy.kube_api import RESOURCES

    needs: dict[tuple[str, str], tuple[str, ...]] = {}
    for obj in objects:
        prefix, plural = RESOURCES[(obj["apiVersion"], obj["kind"])]
        group = obj["apiVersion"].rpartition("/")[0]
        needs[(group, plural)] = OBJECT_VERBS
        del prefix
    for group, plural, verbs in FIXED_NEEDS:
        needs[(group, plural)] = tuple(dict.fromkeys(needs.get((group, plural), ()) + verbs))
    return [(g, r, v) for (g, r), v in sorted(needs.items())]


def _namespace_exists(api: Any, namespace: str) -> bool | None:
    """Whether the namespace exists, asked as a namespaced identity can: reading the
    Namespace needs a cluster-scoped permission the deployer's Role does not grant, so on
    403 a ConfigMap is created in it with dryRun=All (nothing is stored; 404 means no
    namespace)."""
    from scripts.errors import AuthError

    try:
        return api.request("GET", f"/api/v1/namespaces/{namespace}", allow_404=True) is not None
    except AuthError:
        pass
    probe = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "tf-release-pipeline-preflight", "namespace": namespace},
    }
    try:
        created = api.request(
            "POST",
            f"/api/v1/namespaces/{namespace}/configmaps",
            query=[("dryRun", "All")],
            body=probe,
            allow_404=True,
        )
    except AuthError:
        return None  # may neither read the namespace nor create in it: cannot tell
    return created is not None


def check_cluster(
    request: PreflightRequest, settings: Settings, objects: list[dict[str, Any]]
) -> list[Check]:
    from scripts.deploy.kube_api import ClusterConfig, KubeApi
    from scripts.deploy.targets import TargetConfig, resolve_namespace

    rendered_ns = next(
        (o["metadata"]["namespace"] for o in objects if o["metadata"].get("namespace")), None
    )
    namespace = resolve_namespace(
        TargetConfig(kind="k8s", namespace=request.namespace), request.overlay, rendered_ns
    )
    api = KubeApi.connect(
        ClusterConfig(
            kubeconfig=request.kubeconfig or settings.kubeconfig,
            context=request.context,
            in_cluster=False,
        )
    )
    checks: list[Check] = []
    try:
        version = api.request("GET", "/version") or {}
        checks.append(
            Check("cluster", True, f"{api.server} answers (Kubernetes {version.get('gitVersion')})")
        )
        exists = _namespace_exists(api, namespace)
        if exists is None:
            checks.append(
                Check(
                    "namespace",
                    True,
                    f"cannot tell whether {namespace} exists: the identity may neither read "
                    "it nor create in it (see permissions)",
                    skipped=True,
                )
            )
        elif not exists:
            checks.append(
                Check(
                    "namespace",
                    False,
                    f"namespace {namespace} does not exist",
                    f"kubectl create namespace {namespace} (the pipeline never creates it)",
                )
            )
            return checks
        else:
            checks.append(Check("namespace", True, f"{namespace} exists"))
        denied: list[str] = []
        asked = 0
        for group, resource, verbs in _needs(objects):
            for verb in verbs:
                asked += 1
                review = api.request(
                    "POST",
                    "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
                    body={
                        "apiVersion": "authorization.k8s.io/v1",
                        "kind": "SelfSubjectAccessReview",
                        "spec": {
                            "resourceAttributes": {
                                "namespace": namespace,
                                "verb": verb,
                                "group": group,
                                "resource": resource.partition("/")[0],
                                "subresource": resource.partition("/")[2],
                            }
                        },
                    },
                )
                if not (review or {}).get("status", {}).get("allowed"):
                    denied.append(f"{verb} {resource}{'.' + group if group else ''}")
        if denied:
            checks.append(
                Check(
                    "permissions",
                    False,
                    f"the identity may not: {', '.join(denied)} (in {namespace})",
                    f"grant {GKE_ROLE} to the workflow's service account, or bind a Role in "
                    f"{namespace} allowing these verbs",
                )
            )
        else:
            checks.append(
                Check("permissions", True, f"all {asked} verbs the deploy uses are allowed")
            )
    finally:
        api.close()
    return checks


def check_local(request: PreflightRequest, state_dir: Path) -> Check:
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=state_dir):
            pass
    except OSError as exc:
        return Check("local target", False, f"cannot write {state_dir}: {exc}", "pass --state-dir")
    return Check("local target", True, f"state in {state_dir}")


def check_github(request: PreflightRequest, settings: Settings) -> Check:
    from scripts.github.client import GitHubApi

    name = "GitHub deployments"
    if not request.github_repository:
        return Check(name, True, "not in GitHub Actions: no deployment records", skipped=True)
    if not settings.github_token:
        return Check(
            name,
            False,
            "no GITHUB_TOKEN: deployment records cannot be written",
            "pass env GITHUB_TOKEN: ${{ github.token }} to the step",
        )
    with GitHubApi(settings, request.github_repository) as api:
        allowed = api.can_create_deployments(request.github_ref or "preflight")
    if not allowed:
        return Check(
            name,
            False,
            f"the token may not create deployments in {request.github_repository}",
            "add `permissions: {deployments: write}` to the job",
        )
    return Check(name, True, f"the token may create deployments in {request.github_repository}")


def preflight(request: PreflightRequest, settings: Settings, state_dir: Path) -> PreflightReport:
    """Run every check (each failure is reported, none stops the others)."""
    report = PreflightReport()
    report.checks.append(_guard("archive", lambda: check_archive(request, settings)))
    report.checks.append(_guard("registry push", lambda: check_registry(request, settings)))
    report.checks.append(_guard("base image", lambda: check_base(request, settings)))
    objects: list[dict[str, Any]] = []
    try:
        overlay, objects = check_render(request)
        report.checks.append(overlay)
    except PipelineError as exc:
        report.checks.append(Check("overlay", False, exc.what, exc.fix))
    if request.target == "k8s":
        try:
            report.checks += check_cluster(request, settings, objects)
        except PipelineError as exc:
            report.checks.append(Check("cluster", False, exc.what, exc.fix))
    else:
        report.checks.append(check_local(request, state_dir))
    report.checks.append(_guard("GitHub deployments", lambda: check_github(request, settings)))
    for check in report.checks:
        if not check.ok and not check.skipped:
            log.error("preflight: %s: %s. Fix: %s", check.name, check.detail, check.fix)
    return report
