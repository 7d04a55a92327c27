"""Fixtures of the serving tests, made discoverable for every module in this directory."""

from __future__ import annotations

from tests.integration.serving_fixtures import (  # noqa: F401 - pytest finds fixtures by name
    digits_export,
    digits_reference,
    exported_models,
)
