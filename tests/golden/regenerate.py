"""Regenerate tests/golden/<overlay>.yaml: `make golden` (then review the diff)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from scripts.manifests.render import RenderRequest, overlays, render  # noqa: E402
from scripts.model_spec import model_spec_for  # noqa: E402

GOLDEN_DIR = Path(__file__).resolve().parent
GOLDEN_IMAGE = "registry.example/models/digits@sha256:" + "0123456789abcdef" * 4
GOLDEN_MODEL = "digits"


def main() -> None:
    # What `render --model digits` renders: with the model.yaml's batching, if any.
    batching = model_spec_for(GOLDEN_MODEL).batching
    for overlay in overlays():
        rendered = render(
            RenderRequest(
                overlay=overlay,
                image=GOLDEN_IMAGE,
                model=GOLDEN_MODEL,
                allow_ablations=True,
                batching=batching,
            )
        )
        (GOLDEN_DIR / f"{overlay}.yaml").write_text(rendered.yaml_text)
        print(f"wrote tests/golden/{overlay}.yaml")


if __name__ == "__main__":
    main()
