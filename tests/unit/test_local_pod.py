"""The local target's Kubernetes mappings: $(VAR) expansion, the Downward API, paths."""

from __future__ import annotations

from pathlib import Path

import pytest

from scripts.deploy.cgroups import parse_quantity
from scripts.deploy.local_pod import expand, map_paths, resource_value


def test_expansion_follows_kubernetes_rules() -> None:
    env = {"A": "1", "B": "two"}
    assert expand("--x=$(A) --y=$(B)", env) == "--x=1 --y=two"
    assert expand("$(MISSING) stays", env) == "$(MISSING) stays"
    assert expand("$$(A) is escaped", env) == "$(A) is escaped"


@pytest.mark.parametrize(
    ("resources", "field", "divisor", "expected"),
    [
        ({"requests": {"cpu": "500m"}}, "requests.cpu", "1", "1"),  # rounded up
        ({"requests": {"cpu": "7500m"}}, "requests.cpu", "1", "8"),
        ({"requests": {"cpu": "2"}}, "requests.cpu", "1", "2"),
        ({"limits": {"cpu": "3"}}, "requests.cpu", "1", "3"),  # requests default to limits
        ({"limits": {"memory": "1Gi"}}, "limits.memory", "1Mi", "1024"),
        ({"requests": {"cpu": "250m"}}, "requests.cpu", "1m", "250"),
    ],
)
def test_downward_api_resource_values(
    resources: dict[str, dict[str, str]], field: str, divisor: str, expected: str
) -> None:
    assert resource_value(resources, field, divisor) == expected


def test_quantities() -> None:
    assert parse_quantity("500m") == 0.5
    assert parse_quantity("2Gi") == 2 * 1024**3
    with pytest.raises(ValueError, match="quantity"):
        parse_quantity("lots")


def test_paths_are_mapped_once_and_mounts_win() -> None:
    mapping = [
        ("/tmp", Path("/run/pod/tmp")),
        ("/etc/tf-serving", Path("/run/pod/config")),
        ("/models", Path("/cache/image/models")),
    ]
    assert (
        map_paths("--model_config_file=/etc/tf-serving/models.config", mapping)
        == "--model_config_file=/run/pod/config/models.config"
    )
    assert (
        map_paths('base_path: "/models/digits"', mapping)
        == 'base_path: "/cache/image/models/digits"'
    )
    assert map_paths("--x=/tmpfile", mapping) == "--x=/tmpfile"  # a prefix, not a path
