"""The bench library's entry point: a typed request in, a ``BenchResult`` out.

``run_bench`` is what ``python -m scripts bench`` and ``github bench-run`` call.
Progress goes to a callback (the GitHub side edits the sticky comment with it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from scripts.bench.results import BenchResult, OverlayResult, Slo
from scripts.config import KUSTOMIZE_DIR, MODELS_DIR
from scripts.deploy.targets import TargetConfig
from scripts.loadtest.job_spec import GeneratorOptions

if TYPE_CHECKING:
    from scripts.config import Settings


@dataclass(frozen=True)
class BenchRequest:
    model: str
    overlays: list[str]
    out: Path
    target: TargetConfig
    source: str | None = None  # an archive URI (built first) ...
    image: str | None = None  # ... or an image already built
    base: str | None = None  # the base `image` was built on (--base; None: model.yaml/default)
    slo: Slo | None = None  # None: from model.yaml's slos
    prices: Path | None = None  # overrides of the shipped price table
    region: str = "us-central1"
    quick: bool = False
    target_rps: float | None = None  # size replicas for this load (with headroom)
    kustomize_dir: Path = KUSTOMIZE_DIR
    models_dir: Path = MODELS_DIR
    protocol: str = "rest"
    generator: str | None = None  # job | direct (None: job on k8s, direct locally)
    job: GeneratorOptions = field(default_factory=GeneratorOptions)  # the generator Job's
    processes: int = 1  # Locust processes of the direct generator
    start_rps: float | None = None  # None: 20 quick, 10 otherwise
    max_rps: float = 20_000.0
    machine_family: str | None = None  # None: from the node selector, else local / E2
    placement: str = "auto"  # auto | side-by-side | sequential
    run_id: str | None = None  # names the bench objects; None: random
    # `--bases`: (catalog base name, the model's image built on it); each overlay is then
    # measured once per base, as OVERLAY--BASE. Empty: `image` for every overlay.
    bases: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Variant:
    """One thing the bench measures: an overlay, on one base's image."""

    name: str  # the overlay, or OVERLAY--BASE (names objects, keys results)
    overlay: str
    base: str | None
    image: str


def variants(request: BenchRequest) -> list[Variant]:
    """Overlay-major: an overlay's bases sit side by side in the report."""
    if not request.bases:
        return [Variant(o, o, None, request.image or "") for o in request.overlays]
    return [
        Variant(f"{overlay}--{base}", overlay, base, image)
        for overlay in request.overlays
        for base, image in request.bases
    ]


@dataclass(frozen=True)
class Progress:
    overlay: str
    state: str  # queued | deploying | measuring | done | failed
    detail: str  # e.g. "ramp 120 req/s: pass (p99 35.1 ms)"
    result: OverlayResult | None = None  # set when state is done or failed


ProgressCallback = Callable[[Progress], None]


def run_bench(
    request: BenchRequest,
    progress: ProgressCallback | None = None,
    settings: Settings | None = None,
) -> BenchResult:
    """Deploy each overlay under its own name, find its capacity, cost it, tear it down.

    The report (bench.json, report.md, charts) is written to ``request.out``."""
    import os

    from scripts.bench.orchestrate import run
    from scripts.config import Settings

    return run(request, progress or (lambda _p: None), settings or Settings.from_env(os.environ))
