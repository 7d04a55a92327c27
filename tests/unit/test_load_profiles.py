"""Load profiles: model.yaml → an overlay's loadtest.yaml → command-line overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from scripts.config import KUSTOMIZE_DIR, MODELS_DIR
from scripts.errors import ConfigError
from scripts.model_spec import (
    load_model_spec,
    overlay_profile_overrides,
    resolve_load_profile,
)

SPEC = load_model_spec(MODELS_DIR / "digits" / "model.yaml")


def test_layers_apply_in_order_and_untouched_fields_keep_the_models_values() -> None:
    smoke = SPEC.load_profiles["smoke"]
    profile = resolve_load_profile(SPEC, "smoke", {"rate": 100, "users": 16}, {"users": 4})
    assert profile.rate == 100 and profile.users == 4
    assert profile.duration_s == smoke.duration_s and profile.warmup_s == smoke.warmup_s


def test_the_production_overlay_raises_the_smoke_rate() -> None:
    path = KUSTOMIZE_DIR / "overlays" / "production" / "loadtest.yaml"
    overrides = overlay_profile_overrides(path, "smoke")
    assert overrides == {"users": 16, "rate": 100}
    assert overlay_profile_overrides(path, "soak") == {}
    assert (
        overlay_profile_overrides(KUSTOMIZE_DIR / "overlays" / "local" / "loadtest.yaml", "smoke")
        == {}
    )


def test_an_invalid_overlay_file_names_the_field(tmp_path: Path) -> None:
    path = tmp_path / "loadtest.yaml"
    path.write_text("profiles:\n  smoke: {rate: -1, user: 3}\n")
    with pytest.raises(ConfigError) as caught:
        overlay_profile_overrides(path, "smoke")
    assert "profiles.smoke.rate" in str(caught.value) and "profiles.smoke.user" in str(caught.value)


def test_overrides_are_validated_and_unknown_profiles_named() -> None:
    with pytest.raises(ConfigError, match="users"):
        resolve_load_profile(SPEC, "smoke", {"users": 0})
    with pytest.raises(ConfigError, match="no load profile 'burst'"):
        resolve_load_profile(SPEC, "burst")
