"""The run record: one JSON file per pipeline run, each stage's outcome in order.

Written atomically after every stage, so a crash leaves the record of what
finished; later issues use it to resume or skip a rerun of the same release.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from scripts import log as logmod
from scripts.atomic import write_text_atomic
from scripts.errors import PipelineError


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class StageRecord:
    name: str
    status: str = "running"  # running | ok | failed
    started_at: str = field(default_factory=_now)
    duration_s: float = 0.0
    result: dict[str, object] = field(default_factory=dict)
    error: dict[str, object] | None = None


@dataclass
class RunRecord:
    path: Path
    source: str
    started_at: str = field(default_factory=_now)
    status: str = "running"  # running | ok | failed
    stages: list[StageRecord] = field(default_factory=list)
    releases: list[dict[str, object]] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        data = asdict(self)
        data["path"] = str(self.path)
        return data

    def save(self) -> None:
        write_text_atomic(self.path, json.dumps(self.to_dict(), indent=2, default=str) + "\n")

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[StageRecord]:
        """Run one stage inside a log group, recording its result or its error."""
        record = StageRecord(name=name)
        self.stages.append(record)
        started = time.monotonic()
        with logmod.stage(name):
            try:
                yield record
            except PipelineError as exc:
                record.status = "failed"
                record.error = exc.to_dict()
                self.status = "failed"
                raise
            except BaseException as exc:
                record.status = "failed"
                record.error = {"kind": "internal", "message": f"{type(exc).__name__}: {exc}"}
                self.status = "failed"
                raise
            else:
                record.status = "ok"
            finally:
                record.duration_s = round(time.monotonic() - started, 3)
                self.save()

    def finish(self) -> None:
        self.status = "ok"
        self.save()
