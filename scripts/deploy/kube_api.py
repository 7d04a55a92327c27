"""A thin, generic layer over the official kubernetes client.

The client's typed APIs are one class per group; the deploy stage works on
whatever kinds the overlay renders. So objects are addressed by
(apiVersion, kind) → REST path from a table, and requests go through the
client's own ``ApiClient`` (kubeconfig or in-cluster auth, TLS, proxies).
Server-side apply is a ``PATCH`` with ``application/apply-patch+yaml``,
``fieldManager`` and ``force``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scripts.errors import AuthError, ConfigError, RemoteError, RenderError
from scripts.log import log
from scripts.transfer import RetryPolicy, TransientError, call_with_retries

# (apiVersion, kind) → (API prefix, plural). The kinds our overlays render, plus the
# ones the deploy stage reads (pods, events) and the lock (leases).
RESOURCES: dict[tuple[str, str], tuple[str, str]] = {
    ("v1", "ConfigMap"): ("/api/v1", "configmaps"),
    ("v1", "Service"): ("/api/v1", "services"),
    ("v1", "Pod"): ("/api/v1", "pods"),
    ("v1", "Event"): ("/api/v1", "events"),
    ("apps/v1", "Deployment"): ("/apis/apps/v1", "deployments"),
    ("policy/v1", "PodDisruptionBudget"): ("/apis/policy/v1", "poddisruptionbudgets"),
    ("autoscaling/v2", "HorizontalPodAutoscaler"): (
        "/apis/autoscaling/v2",
        "horizontalpodautoscalers",
    ),
    ("keda.sh/v1alpha1", "ScaledObject"): ("/apis/keda.sh/v1alpha1", "scaledobjects"),
    ("networking.k8s.io/v1", "Ingress"): ("/apis/networking.k8s.io/v1", "ingresses"),
    ("coordination.k8s.io/v1", "Lease"): ("/apis/coordination.k8s.io/v1", "leases"),
    ("batch/v1", "Job"): ("/apis/batch/v1", "jobs"),
    ("networking.k8s.io/v1", "NetworkPolicy"): ("/apis/networking.k8s.io/v1", "networkpolicies"),
    ("v1", "Node"): ("/api/v1", "nodes"),  # read by bench's placement and SIGILL diagnosis
}
CLUSTER_SCOPED = frozenset({("v1", "Node")})
_TRANSIENT = frozenset({429, 500, 502, 503, 504})


class ApiConflict(Exception):
    """HTTP 409 from the API server (optimistic-concurrency or already-exists)."""


@dataclass(frozen=True)
class ClusterConfig:
    kubeconfig: Path | None
    context: str | None
    in_cluster: bool


def resource_path(api_version: str, kind: str, namespace: str, name: str | None = None) -> str:
    try:
        prefix, plural = RESOURCES[(api_version, kind)]
    except KeyError as exc:
        raise RenderError(
            f"the deploy stage does not know {api_version} {kind}",
            cause="an overlay renders a kind outside scripts/deploy/kube_api.py:RESOURCES",
            fix="add the kind to the table (API prefix and plural)",
        ) from exc
    if (api_version, kind) in CLUSTER_SCOPED:
        path = f"{prefix}/{plural}"
    else:
        path = f"{prefix}/namespaces/{namespace}/{plural}"
    return f"{path}/{name}" if name else path


class KubeApi:
    def __init__(self, api_client: Any, retry: RetryPolicy, server: str) -> None:
        self._client = api_client
        self.retry = retry
        self.server = server

    @classmethod
    def connect(cls, cluster: ClusterConfig, retry: RetryPolicy | None = None) -> KubeApi:
        from kubernetes import client, config
        from kubernetes.config.config_exception import ConfigException

        configuration = client.Configuration()
        try:
            if cluster.in_cluster:
                config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
            else:
                config.load_kube_config(  # type: ignore[no-untyped-call]
                    config_file=str(cluster.kubeconfig) if cluster.kubeconfig else None,
                    context=cluster.context,
                    client_configuration=configuration,
                )
        except (ConfigException, FileNotFoundError, OSError) as exc:
            raise ConfigError(
                f"no usable Kubernetes configuration: {exc}",
                cause="no kubeconfig, a wrong --context, or not running in a cluster",
                fix="in Actions run google-github-actions/get-gke-credentials first; locally "
                "set KUBECONFIG or pass --kubeconfig/--context",
            ) from exc
        return cls(client.ApiClient(configuration), retry or RetryPolicy(), configuration.host)

    def close(self) -> None:
        self._client.close()

    # -- raw requests --------------------------------------------------------------
    def request(
        self,
        method: str,
        path: str,
        *,
        query: list[tuple[str, str]] | None = None,
        body: Any = None,
        content_type: str | None = None,
        allow_404: bool = False,
    ) -> dict[str, Any] | None:
        data = self._call(
            method, path, query=query, body=body, content_type=content_type, allow_404=allow_404
        )
        if data is None:
            return None
        parsed = json.loads(data) if data else None
        return parsed if isinstance(parsed, dict) else None

    def text(self, path: str, *, query: list[tuple[str, str]] | None = None) -> str | None:
        """A GET whose answer is text (a pod's log); None on 404."""
        data = self._call("GET", path, query=query, allow_404=True, accept="*/*")
        return None if data is None else data.decode("utf-8", errors="replace")

    def pod_log(self, namespace: str, pod: str, container: str) -> str | None:
        """The container's log as the API server serves it (the kubelet's newest file)."""
        return self.text(
            f"/api/v1/namespaces/{namespace}/pods/{pod}/log", query=[("container", container)]
        )

    def _call(
        self,
        method: str,
        path: str,
        *,
        query: list[tuple[str, str]] | None = None,
        body: Any = None,
        content_type: str | None = None,
        allow_404: bool = False,
        accept: str = "application/json",
    ) -> bytes | None:
        headers = {"Accept": accept}
        if content_type:
            headers["Content-Type"] = content_type
        elif body is not None:
            headers["Content-Type"] = "application/json"

        def once() -> bytes | None:
            import urllib3

            serialized = self._client.param_serialize(
                method=method,
                resource_path=path,
                query_params=query or [],
                header_params=headers,
                body=body,
                auth_settings=["BearerToken"],
            )
            try:
                response = self._client.call_api(*serialized, _request_timeout=self.retry.timeout_s)
                response.read()
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                raise TransientError(f"{method} {path}: {exc}") from exc
            status = response.status
            if status < 300:
                return bytes(response.data or b"")
            try:
                data = json.loads(response.data) if response.data else None
            except ValueError:
                data = None
            message = (data or {}).get("message", "") if isinstance(data, dict) else ""
            if status in _TRANSIENT:
                raise TransientError(f"API server answered {status} to {method} {path}")
            if status == 404 and allow_404:
                return None
            if status == 409:
                raise ApiConflict(message or f"409 on {method} {path}")
            if status == 401:
                raise AuthError(
                    f"the API server {self.server} rejected our credentials (HTTP 401)",
                    cause="an expired token (GKE credentials from get-gke-credentials last "
                    "about an hour) or a wrong kubeconfig user",
                    fix="refresh the credentials and rerun; the deploy resumes idempotently",
                )
            if status == 403:
                raise AuthError(
                    f"the API server refused {method} {path}: {message}",
                    cause="the deployer's RBAC role lacks this verb or resource",
                    fix="bind the shipped Role (kustomize/rbac) to the deployer in this "
                    "namespace; `python -m scripts preflight` names each missing verb",
                )
            raise RemoteError(
                f"the API server answered {status} to {method} {path}: {message}",
                cause="the object was rejected (admission, quota or validation)",
                fix="see the server's message above",
            )

        return call_with_retries(
            self.retry,
            once,
            lambda exc: RemoteError(
                f"the Kubernetes API server {self.server} kept failing: {exc}",
                cause="the control plane is unavailable or overloaded",
                fix="retry later; deploys are idempotent",
            ),
        )

    # -- objects ---------------------------------------------------------------------
    def apply(
        self,
        obj: dict[str, Any],
        namespace: str,
        field_manager: str,
        *,
        dry_run: bool = False,
        conflicts: int = 3,
    ) -> dict[str, Any]:
        """Server-side apply (force: we own these objects); 409s are retried."""
        meta = obj["metadata"]
        path = resource_path(obj["apiVersion"], obj["kind"], namespace, meta["name"])
        query = [("fieldManager", field_manager), ("force", "true")]
        if dry_run:
            query.append(("dryRun", "All"))
        body = {**obj, "metadata": {**meta, "namespace": namespace}}
        for attempt in range(conflicts + 1):
            try:
                result = self.request(
                    "PATCH",
                    path,
                    query=query,
                    body=body,
                    content_type="application/apply-patch+yaml",
                )
                return result or {}
            except ApiConflict as exc:
                if attempt == conflicts:
                    raise RemoteError(
                        f"{obj['kind']}/{meta['name']} kept conflicting: {exc}",
                        cause="another controller or deploy keeps changing it",
                        fix="check who else manages this object (metadata.managedFields)",
                    ) from exc
                log.warning("conflict applying %s/%s; retrying", obj["kind"], meta["name"])
        raise AssertionError("unreachable")  # pragma: no cover

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self.request(
            "GET", resource_path(api_version, kind, namespace, name), allow_404=True
        )

    def list(
        self,
        api_version: str,
        kind: str,
        namespace: str,
        *,
        labels: str | None = None,
        fields: str | None = None,
        missing_ok: bool = False,
    ) -> list[dict[str, Any]]:
        """The objects of a kind; ``missing_ok``: none when the cluster does not know the
        kind (a CRD that is not installed) rather than an error."""
        query = []
        if labels:
            query.append(("labelSelector", labels))
        if fields:
            query.append(("fieldSelector", fields))
        data = self.request(
            "GET", resource_path(api_version, kind, namespace), query=query, allow_404=missing_ok
        )
        items: list[dict[str, Any]] = (data or {}).get("items", [])
        return items

    def delete(
        self,
        api_version: str,
        kind: str,
        namespace: str,
        name: str,
        *,
        propagation: str = "Foreground",
    ) -> bool:
        """Delete; False when it was already gone.

        ``Foreground`` (the default) keeps the object, marked for deletion, until the
        garbage collector has removed its dependents (a Deployment's ReplicaSets and
        pods); ``Background`` removes it at once (a Lease has no dependents)."""
        result = self.request(
            "DELETE",
            resource_path(api_version, kind, namespace, name),
            query=[("propagationPolicy", propagation)],
            allow_404=True,
        )
        return result is not None

    def create(self, obj: dict[str, Any], namespace: str) -> dict[str, Any]:
        path = resource_path(obj["apiVersion"], obj["kind"], namespace)
        return self.request("POST", path, body=obj) or {}

    def replace(self, obj: dict[str, Any], namespace: str) -> dict[str, Any]:
        path = resource_path(obj["apiVersion"], obj["kind"], namespace, obj["metadata"]["name"])
        return self.request("PUT", path, body=obj) or {}
