"""The pull request that records a gate calibration (``gate record --open-pr``).

A calibration measured on the cluster (``gate calibrate`` in the gate-calibrate
workflow) changes how the gate judges every later release of the model on that overlay,
so it reaches ``models/NAME/gate-calibration.yaml`` through a pull request that shows
what it rests on (the A/A ratios, σ, the tolerance before and after), never a push.
The branch is ``gate-calibration/MODEL/OVERLAY/<12 hex of the entry>``: a rerun with the
same result reuses branch, commit and pull request (scripts/github/file_pr.py); a newer
calibration of the same model and overlay lists the older open pull requests as
superseded.
"""

from __future__ import annotations

import hashlib
import json

import yaml
from pydantic import ValidationError

from scripts.gate.calibration import (
    CALIBRATION_FILE,
    CalibrationFile,
    OverlayCalibration,
    calibration_text,
)
from scripts.github.client import GitHubApi
from scripts.github.file_pr import FileChange, ProposedChange, propose

BRANCH_PREFIX = "gate-calibration/"


def repo_path(model: str) -> str:
    return f"models/{model}/{CALIBRATION_FILE}"


def branch_for(model: str, overlay: str, entry: OverlayCalibration) -> str:
    digest = hashlib.sha256(json.dumps(entry.model_dump(), sort_keys=True).encode()).hexdigest()
    # Slashes, not dashes: overlay names have dashes (local vs local-1x500m).
    return f"{BRANCH_PREFIX}{model}/{overlay}/{digest[:12]}"


def body_for(
    model: str,
    overlay: str,
    entry: OverlayCalibration,
    *,
    previous: float | None,
    run_url: str | None,
    supersedes: list[int],
) -> str:
    ratios = ", ".join(f"×{r:.3f}" for r in entry.ratios)
    rows = [
        ("model / overlay", f"`{model}` / `{overlay}`"),
        ("target", f"`{entry.target}`"),
        ("stable image (both twins)", f"`{entry.image}`"),
        ("A/A runs", f"{entry.trials} judged, {entry.inconclusive} inconclusive"),
        ("ratios (canary / fresh baseline)", ratios),
        ("log ratio", f"mean {entry.log_ratio_mean:+.4f}, σ {entry.log_ratio_sigma:.4f}"),
        ("σ, 90 % upper bound", f"{entry.log_ratio_sigma_upper:.4f}"),
        (
            "latency tolerance",
            f"**×{entry.latency_tolerance:g}**"
            + (f" (was ×{previous:g})" if previous is not None else ""),
        ),
    ]
    if run_url:
        rows.append(("workflow run", run_url))
    lines = [
        f"Records the gate calibration of `{model}` on `{overlay}` in "
        f"`{repo_path(model)}`: the spread of the latency ratio between two identical "
        "versions, measured where the gate runs, sets the tolerance as "
        'exp(|mean| + 3 σ_upper) (docs/gate.md, "Calibrate the tolerance").',
        "",
        "| | |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in rows),
        "",
        "Once merged, every delivery of this model on this overlay is judged with it.",
        "",
        "Checks do not start by themselves on a pull request opened with the workflow's "
        "token: close and reopen it (or push to it) to run them.",
    ]
    if supersedes:
        numbers = ", ".join(f"#{n}" for n in supersedes)
        lines += ["", f"Supersedes {numbers} (an older calibration of the same overlay)."]
    return "\n".join(lines) + "\n"


def _on_default(text: str, overlay: str) -> float | None:
    """The overlay's calibrated tolerance in the default branch's file, if any."""
    try:
        raw = yaml.safe_load(text) if text.strip() else None
        found = CalibrationFile.model_validate(raw).overlays.get(overlay) if raw else None
    except (yaml.YAMLError, ValidationError):
        return None  # the commit replaces a broken file; the body just says less
    return found.latency_tolerance if found else None


def open_calibration_pull_request(
    api: GitHubApi,
    model: str,
    overlay: str,
    entry: OverlayCalibration,
    *,
    uncalibrated: float,
    run_url: str | None = None,
) -> ProposedChange:
    """Open (or bring up to date) the pull request that records ``entry``; idempotent.
    Its body compares the tolerance with the default branch's for the overlay (else
    ``uncalibrated``: the model.yaml's)."""
    path = repo_path(model)
    return propose(
        api,
        FileChange(
            path=path,
            change=lambda text: calibration_text(text, path, model, overlay, entry),
            branch=branch_for(model, overlay, entry),
            title=f"gate: calibrate {model} on {overlay} (tolerance ×{entry.latency_tolerance:g})",
            commit_message=(
                f"gate: calibrate {model} on {overlay}: tolerance ×{entry.latency_tolerance:g}"
                f"\n\n{entry.describe()}"
            ),
            body=lambda supersedes, on_default: body_for(
                model,
                overlay,
                entry,
                previous=_on_default(on_default, overlay) or uncalibrated,
                run_url=run_url,
                supersedes=supersedes,
            ),
            supersede_prefix=f"{BRANCH_PREFIX}{model}/{overlay}/",
            must_exist=False,
        ),
    )
