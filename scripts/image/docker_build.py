"""The ``docker`` builder: the source pipeline's way, through a Docker Engine API.

create a container from the base → ``put_archive`` the model → ``commit`` with
``ENV MODEL_NAME=…`` and labels → tag → push. For users who have a daemon (or
podman's Docker-compatible API). The SDK's push does not raise on failure: its
stream is scanned for ``errorDetail``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from scripts.errors import AuthError, RemoteError, ToolMissingError
from scripts.image.auth import CredentialStore
from scripts.image.compose import ImageMeta
from scripts.image.layer import model_version_dir
from scripts.image.reference import ImageRef
from scripts.log import log
from scripts.reproducible_tar import ReproducibleTar

if TYPE_CHECKING:
    from scripts.image.build import BuildRequest, BuildResult


def _scan_push(stream: Any, target: str) -> tuple[str | None, int, bool]:
    """Return (digest, pushed bytes, all layers already existed); raise on errorDetail."""
    digest = None
    pushed: dict[str, int] = {}
    statuses: list[str] = []
    for line in stream:
        if "errorDetail" in line or "error" in line:
            message = (line.get("errorDetail") or {}).get("message") or line.get("error")
            if "denied" in str(message) or "unauthorized" in str(message):
                raise AuthError(
                    f"push of {target} was refused: {message}",
                    cause="the daemon has no login for this registry",
                    fix="docker login to the registry, or configure credentials",
                )
            raise RemoteError(
                f"push of {target} failed: {message}",
                cause="the registry or the daemon reported an error",
                fix="see the message; rerun once the cause is fixed",
            )
        status = str(line.get("status", ""))
        if line.get("id") and status:
            statuses.append(status)
        detail = line.get("progressDetail") or {}
        if line.get("id") and detail.get("total"):
            pushed[line["id"]] = int(detail["total"])
        aux = line.get("aux") or {}
        if aux.get("Digest"):
            digest = str(aux["Digest"])
    layer_statuses = [
        s for s in statuses if s in ("Pushed", "Layer already exists", "Mounted from")
    ]
    reused = bool(layer_statuses) and all(s == "Layer already exists" for s in layer_statuses)
    return digest, sum(pushed.values()), reused


def docker_build(request: BuildRequest) -> BuildResult:
    from scripts.image.build import BuildResult, archive_sha_from_fetch_record, tags_for

    try:
        import docker
        from docker.errors import APIError, DockerException, ImageNotFound
    except ImportError as exc:  # pragma: no cover - docker is a dependency
        raise ToolMissingError("the docker SDK is not installed") from exc
    name, version, version_dir = model_version_dir(request.model_dir)
    target = ImageRef.parse(request.image)
    repo = target.name
    host = request.docker_host or "unix:///var/run/docker.sock"
    if host.startswith("unix://") and not Path(host.removeprefix("unix://")).exists():
        # Checked up front: the SDK leaks its socket when connecting to a missing path.
        raise ToolMissingError(
            f"no Docker Engine API socket at {host}",
            cause="no daemon is running, or DOCKER_HOST points elsewhere",
            fix="start the daemon (or `podman system service`), or use --builder registry, "
            "which needs no daemon",
        )
    client = None
    try:
        client = (
            docker.DockerClient(base_url=request.docker_host)
            if request.docker_host
            else docker.from_env()
        )
        client.ping()
    except DockerException as exc:
        if client is not None:
            client.close()
        raise ToolMissingError(
            f"no Docker Engine API reachable: {exc}",
            cause="no daemon is running, or DOCKER_HOST points elsewhere",
            fix="start the daemon (or `podman system service`), or use --builder registry, "
            "which needs no daemon",
        ) from exc
    meta = ImageMeta(
        model_name=name,
        version=version,
        archive_sha256=request.archive_sha256
        or archive_sha_from_fetch_record(request.model_dir, name, version),
        source=request.source_url,
        revision=request.revision,
        created_epoch=request.created_epoch,
        base_labels=request.base_labels,
    )
    container = None
    try:
        try:
            client.images.get(request.base)
        except ImageNotFound:
            log.info("pulling base %s", request.base)
            client.images.pull(request.base, platform=str(request.platform))
        container = client.containers.create(request.base)
        with tempfile.TemporaryFile() as spool:
            with ReproducibleTar(spool, request.created_epoch) as tar:
                tar.add_tree(version_dir, PurePosixPath("models", name, str(version)))
            spool.seek(0)
            container.put_archive("/", spool)
        changes = [f"ENV MODEL_NAME={name}"]
        changes += [f'LABEL "{k}"="{v}"' for k, v in meta.labels().items()]
        content_digest = f"sha256:{_tree_digest(version_dir)}"
        tags = tags_for(version, content_digest, target.tag)
        image = container.commit(repository=repo, tag=tags[0], changes=changes)
        for tag in tags[1:]:
            image.tag(repo, tag)
        auth = None
        cred = CredentialStore(request.docker_config).lookup(target.registry)
        if cred is not None:
            auth = {"username": cred.username, "password": cred.password}
        digest = None
        pushed = 0
        reused = True
        if not request.dry_run:
            for tag in tags:
                stream = client.images.push(
                    repo, tag=tag, stream=True, decode=True, auth_config=auth
                )
                tag_digest, tag_bytes, tag_reused = _scan_push(stream, f"{repo}:{tag}")
                digest = digest or tag_digest
                pushed += tag_bytes
                reused = reused and tag_reused
        image.reload()
        digest = digest or str(image.id)
    except APIError as exc:
        raise RemoteError(
            f"the Docker Engine API failed: {exc.explanation or exc}",
            cause="the daemon rejected a step",
            fix="see the daemon's message",
        ) from exc
    finally:
        if container is not None:
            container.remove(force=True)
        client.close()
    return BuildResult(
        image=f"{repo}@{digest}",
        digest=digest,
        tags=tags,
        pushed_bytes=pushed,
        reused=reused and not request.dry_run,
        builder="docker",
        base=request.base,
        model_name=name,
        version=version,
        layer_digest=content_digest,
        media_type="application/vnd.docker.distribution.manifest.v2+json",
        dry_run=request.dry_run,
        actions=[],
    )


def _tree_digest(root: Path) -> str:
    """A content hash of the model tree, for the content tag (the daemon owns the layer)."""
    import hashlib

    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.is_file():
            digest.update(path.relative_to(root).as_posix().encode() + b"\0")
            with path.open("rb") as fh:
                while chunk := fh.read(1 << 20):
                    digest.update(chunk)
    return digest.hexdigest()
