"""The in-cluster load generator's image, built with the project's own image builder.

One layer on a Python base: ``/opt/tf-loadgen/site-packages`` (requirements-loadgen.txt,
pinned by constraints.txt, installed at build time for the base's Python and
platform: wheels only) and ``/opt/tf-loadgen/app`` (the generator's modules from this
checkout, exactly the ones :data:`CODE` lists). ``PYTHONPATH`` points at both; the Job
runs ``python -m scripts.loadtest.generator``.

Pushed once, reused after: the tag is ``loadgen-<fingerprint>``, a hash of the code,
the requirement pins, the base and the platform. When that tag already exists the
build is skipped (``reused: true``) and its digest returned; a change to the load-test
code makes a new tag. The layer is byte-reproducible (sorted entries, fixed mtime, no
bytecode, no console scripts, whose shebangs name the building machine's Python).

``with_dependencies=False`` (the local target's image) leaves the dependencies out:
the local target runs the Job's command with this checkout's interpreter and venv,
as it runs TF Serving's command with this checkout's server.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from scripts.config import REPO_ROOT
from scripts.errors import UsageError
from scripts.image.base import Platform, resolve_base
from scripts.image.compose import LABEL_PREFIX, compose_layer
from scripts.image.layer import LayerBlob, _write_layer
from scripts.image.reference import SCRATCH, ImageRef, LayoutRef, is_layout
from scripts.loadtest.job_spec import GeneratorOptions
from scripts.log import log
from scripts.process import run
from scripts.transfer import RetryPolicy

# The generator's import closure (tests/unit/test_generator_image.py runs the generator
# from exactly these files and the installed requirements, nothing else).
CODE = (
    "scripts/__init__.py",
    "scripts/errors.py",
    "scripts/gcs_client.py",
    "scripts/log.py",
    "scripts/proto_builder.py",
    "scripts/loadtest/__init__.py",
    "scripts/loadtest/frames.py",
    "scripts/loadtest/generator.py",
    "scripts/loadtest/grpc_payload.py",
    "scripts/loadtest/locust_process.py",
    "scripts/loadtest/locustfile_grpc.py",
    "scripts/loadtest/locustfile_rest.py",
    "scripts/loadtest/openloop.py",
    "scripts/loadtest/payload.py",
    "scripts/loadtest/reachability.py",
    "scripts/loadtest/results_store.py",
)
REQUIREMENTS = ("requirements-loadgen.txt", "requirements-loadgen-nodeps.txt", "constraints.txt")
ROOT = PurePosixPath("opt/tf-loadgen")
PYTHONPATH = "/opt/tf-loadgen/app:/opt/tf-loadgen/site-packages"
# A Debian-based Python matching the pins' wheels (cp311, manylinux x86_64). A tag:
# the build resolves it and records the digest in the image's labels.
DEFAULT_BASE = "docker.io/library/python:3.11-slim-bookworm"
IMAGE_NAME = "tf-loadgen"
FINGERPRINT_LABEL = "dev.tf-release-pipeline.loadgen.fingerprint"


@dataclass(frozen=True)
class GeneratorImageRequest:
    repository: str  # REGISTRY/REPO, or oci:DIR
    base: str = DEFAULT_BASE
    with_dependencies: bool = True
    platform: Platform = field(default_factory=lambda: Platform("linux", "amd64"))
    python_version: str = "3.11"
    insecure: bool = False
    dry_run: bool = False
    docker_config: Path | None = None
    cache_dir: Path = Path(".cache/loadgen")
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    root: Path = REPO_ROOT


@dataclass(frozen=True)
class GeneratorImage:
    image: str  # REF@sha256:…
    digest: str
    tag: str
    reused: bool
    base: str
    fingerprint: str
    pushed_bytes: int = 0

    def to_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


def fingerprint(request: GeneratorImageRequest) -> str:
    digest = hashlib.sha256()
    for name in (*CODE, *(REQUIREMENTS if request.with_dependencies else ())):
        digest.update(name.encode() + b"\0" + (request.root / name).read_bytes() + b"\0")
    digest.update(
        json.dumps(
            [request.base, str(request.platform), request.python_version,
             request.with_dependencies]
        ).encode()
    )  # fmt: skip
    return digest.hexdigest()[:20]


def _existing(request: GeneratorImageRequest, tag: str) -> str | None:
    from scripts.image.auth import CredentialStore
    from scripts.image.oci_layout import OCILayout
    from scripts.image.registry import client_for

    if is_layout(request.repository):
        layout = OCILayout(Path(LayoutRef.parse(request.repository).path))
        return layout.tag_digest(tag) if layout.exists() else None
    ref = ImageRef.parse(f"{request.repository}:{tag}")
    client = client_for(
        ref, CredentialStore(request.docker_config), insecure=request.insecure, retry=request.retry
    )
    try:
        return client.manifest_digest(ref.repository, tag)
    finally:
        client.close()


def _stage(request: GeneratorImageRequest, staging: Path) -> None:
    app = staging / "app"
    for name in CODE:
        target = app / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(request.root / name, target)
    if not request.with_dependencies:
        return
    site = staging / "site-packages"
    common = [
        sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
        "--no-compile", "--target", str(site), "--only-binary=:all:",
        "--platform", "manylinux2014_x86_64", "--platform", "manylinux_2_17_x86_64",
        "--platform", "manylinux_2_28_x86_64", "--implementation", "cp",
        "--python-version", request.python_version,
    ]  # fmt: skip
    root = request.root
    run(
        [*common, "-r", str(root / REQUIREMENTS[0]), "-c", str(root / "constraints.txt")],
        what="pip install (generator image dependencies)",
    )
    run(
        [*common, "--no-deps", "-r", str(root / REQUIREMENTS[1])],
        what="pip install --no-deps (generator image)",
    )
    # Console scripts name the building machine's interpreter; the Job runs `python -m`.
    shutil.rmtree(site / "bin", ignore_errors=True)
    for cache in site.rglob("__pycache__"):
        shutil.rmtree(cache, ignore_errors=True)


def build_generator_image(request: GeneratorImageRequest) -> GeneratorImage:
    """Build and push the generator image, or reuse the one this code already has."""
    from scripts.image.auth import CredentialStore
    from scripts.image.publish import LayoutPublisher, Publisher, RegistryPublisher
    from scripts.image.registry import RegistryClient, client_for

    if "@" in request.repository or (
        not is_layout(request.repository) and ":" in request.repository.rsplit("/", 1)[-1]
    ):
        raise UsageError(
            f"--repository {request.repository} names a tag or digest",
            fix="name the repository only (the tag is computed from the code)",
        )
    key = fingerprint(request)
    tag = f"loadgen-{key}"
    found = None if request.dry_run else _existing(request, tag)
    if found:
        ref = f"{request.repository}@{found}"
        log.info("generator image %s is already there (%s): reused", tag, ref)
        return GeneratorImage(ref, found, tag, True, request.base, key)
    creds = CredentialStore(request.docker_config)
    publisher: Publisher
    client: RegistryClient | None = None
    if is_layout(request.repository):
        publisher = LayoutPublisher(LayoutRef.parse(f"{request.repository}:{tag}"))
    else:
        target = ImageRef.parse(f"{request.repository}:{tag}")
        client = client_for(target, creds, insecure=request.insecure, retry=request.retry)
        publisher = RegistryPublisher(client, target)
    base_client = None
    if request.base != SCRATCH and not is_layout(request.base):
        base_client = client_for(
            ImageRef.parse(request.base), creds, insecure=request.insecure, retry=request.retry
        )
    try:
        base = resolve_base(request.base, request.platform, base_client)
        request.cache_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="loadgen-", dir=request.cache_dir) as tmp:
            staging = Path(tmp) / "stage"
            _stage(request, staging)
            layer = _layer(staging, Path(tmp) / "layer.tar.gz")
            labels = {
                f"{LABEL_PREFIX}.title": IMAGE_NAME,
                FINGERPRINT_LABEL: key,
                f"{LABEL_PREFIX}.description": "tf-release-pipeline in-cluster load generator",
            }
            if base.manifest_digest:
                labels[f"{LABEL_PREFIX}.base.digest"] = base.manifest_digest
                labels[f"{LABEL_PREFIX}.base.name"] = base.display.split("@", 1)[0]
            image = compose_layer(
                base,
                layer,
                env={"PYTHONPATH": PYTHONPATH, "PYTHONDONTWRITEBYTECODE": "1"},
                labels=labels,
                created="1970-01-01T00:00:00Z",
                created_by="tf-release-pipeline generator-image",
                comment=f"load generator {key}",
            )
            report = publisher.publish(base, layer, image, [tag], request.dry_run)
    finally:
        for c in {c for c in (client, base_client) if c is not None}:
            c.close()
    digest = image.manifest.digest
    log.info("generator image %s built: %s", tag, digest)
    return GeneratorImage(
        publisher.image_name(digest), digest, tag, False, base.display, key, report.pushed_bytes
    )


def _layer(staging: Path, path: Path) -> LayerBlob:
    with path.open("wb") as fh:
        writer = _write_layer([(ROOT, staging)], fh, "gzip", 0, None)
    return LayerBlob(
        path=path,
        digest=f"sha256:{writer.blob.hexdigest()}",
        size=writer.size,
        diff_id=f"sha256:{writer.diff.hexdigest()}",
        compression="gzip",
        uncompressed_size=writer.raw_size,
    )


def resolve_generator_image(
    options: GeneratorOptions,
    *,
    target: str,
    cache_dir: Path,
    docker_config: Path | None,
    insecure: bool = False,
    sibling_of: str | None = None,
) -> str:
    """The generator image a run uses: given, built into a repository, or (local target)
    built into this machine's cache without dependencies. Reused when unchanged."""
    from scripts.errors import ConfigError

    if options.image:
        return options.image
    repository = options.repository
    if repository is None and sibling_of and not is_layout(sibling_of):
        repository = f"{sibling_of.rsplit('/', 1)[0]}/{IMAGE_NAME}"  # beside the model's
    if repository is None and target == "local":
        built = build_generator_image(
            GeneratorImageRequest(
                repository=f"oci:{cache_dir / 'loadgen'}",
                base=SCRATCH,
                with_dependencies=False,
                cache_dir=cache_dir / "loadgen-build",
            )
        )
        return built.image
    if repository is None:
        raise ConfigError(
            "the in-cluster load test needs a generator image",
            cause="no --generator-image, no --generator-repository and no --image-repo "
            "to put one beside",
            fix="pass --generator-image REF@sha256:… (python -m scripts generator-image "
            "builds one), or --generator-repository REGISTRY/REPO",
        )
    built = build_generator_image(
        GeneratorImageRequest(
            repository=repository,
            base=options.base or DEFAULT_BASE,
            insecure=insecure,
            docker_config=docker_config,
            cache_dir=cache_dir / "loadgen-build",
        )
    )
    return built.image
