"""Does every endpoint answer before load is sent (from wherever the generator runs)?"""

from __future__ import annotations

from scripts.errors import RemoteError


def check_reachable(
    tracks: dict[str, list[str]], model: str, protocol: str, timeout: float = 5.0
) -> None:
    """Every endpoint must answer before load is sent: a run against addresses this
    machine cannot reach (in-cluster DNS from a hosted CI runner, a replica that went
    away) would otherwise be judged as a candidate that fails every request."""
    for track, endpoints in tracks.items():
        for endpoint in endpoints:
            problem = (
                _rest_problem(endpoint, model, timeout)
                if protocol == "rest"
                else _grpc_problem(endpoint, timeout)
            )
            if problem:
                raise RemoteError(
                    f"the {track} endpoint {endpoint} does not answer for model "
                    f"{model!r}: {problem}",
                    cause="the load test runs outside the network of the endpoints (for "
                    "Kubernetes: in-cluster Service addresses from a hosted CI runner), or "
                    "the replica is not ready",
                    fix="generate the load inside the cluster (--generator job, the default "
                    "with --target k8s), or pass --canary-endpoint/--baseline-endpoint "
                    "addresses this machine reaches (an internal load balancer)",
                )


def _rest_problem(endpoint: str, model: str, timeout: float) -> str:
    import requests

    try:
        requests.get(
            f"{endpoint.rstrip('/')}/v1/models/{model}", timeout=timeout
        ).raise_for_status()
    except requests.RequestException as exc:
        return str(exc)
    return ""


def _grpc_problem(endpoint: str, timeout: float) -> str:
    import grpc

    from scripts.loadtest.grpc_payload import grpc_target

    with grpc.insecure_channel(grpc_target(endpoint)) as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=timeout)
        except grpc.FutureTimeoutError:
            return f"no gRPC connection within {timeout:g} s"
    return ""
