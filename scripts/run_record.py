"""The run record: one JSON file per pipeline run, each stage's outcome in order.

Written atomically after every stage, so a crash leaves the record of what
finished. A rerun with the same request reads it back (:meth:`RunRecord.load`) and
reuses what is still valid (:mod:`scripts.pipeline` decides what that is); reused
stages are recorded with status ``reused`` and the earlier result.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from scripts import log as logmod
from scripts.atomic import write_text_atomic
from scripts.errors import PipelineError


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class StageRecord:
    name: str
    status: str = "running"  # running | ok | failed | reused
    started_at: str = field(default_factory=_now)
    duration_s: float = 0.0
    result: dict[str, Any] = field(default_factory=dict)
    error: dict[str, object] | None = None


@dataclass
class RunRecord:
    path: Path
    source: str
    started_at: str = field(default_factory=_now)
    status: str = "running"  # running | ok | failed
    stages: list[StageRecord] = field(default_factory=list)
    releases: list[dict[str, object]] = field(default_factory=list)
    fingerprint: str = ""  # of the request: a rerun of the same request may resume
    resumed_from: str | None = None  # started_at of the record this run resumed

    def to_dict(self) -> dict[str, object]:
        data = asdict(self)
        data["path"] = str(self.path)
        return data

    def save(self) -> None:
        write_text_atomic(self.path, json.dumps(self.to_dict(), indent=2, default=str) + "\n")

    @classmethod
    def load(cls, path: Path) -> RunRecord | None:
        """The record at ``path``, or None when there is none (or it is unreadable)."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            stages = [StageRecord(**s) for s in data.get("stages", [])]
            return cls(
                path=path,
                source=str(data.get("source", "")),
                started_at=str(data.get("started_at", "")),
                status=str(data.get("status", "")),
                stages=stages,
                releases=list(data.get("releases", [])),
                fingerprint=str(data.get("fingerprint", "")),
                resumed_from=data.get("resumed_from"),
            )
        except (OSError, ValueError, TypeError):
            return None

    def result_of(self, name: str) -> dict[str, Any] | None:
        """The result of the last stage called ``name`` that finished (ok or reused)."""
        for stage in reversed(self.stages):
            if stage.name == name and stage.status in ("ok", "reused"):
                return stage.result
        return None

    def reuse(self, name: str, result: dict[str, Any], why: str) -> None:
        """Record a stage taken over from an earlier run of the same request."""
        logmod.log.info("%s: reused from the earlier run (%s)", name, why)
        self.stages.append(StageRecord(name=name, status="reused", result=result))
        self.save()

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

    def finish(self, status: str = "ok") -> None:
        self.status = status
        self.save()
