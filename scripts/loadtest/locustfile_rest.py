"""Locust user for TF Serving's REST API: open-loop arrivals, canary and baseline together.

Run by scripts/loadtest/runner.py as a subprocess (never imported by the pipeline:
gevent monkey-patching must not touch the pipeline's own process). Configured by
environment variables the runner sets:

* ``TFRP_TRACKS``: JSON ``{"canary": [url, ...], "baseline": [url, ...]}``
* ``TFRP_USERS``: users per track; ``TFRP_RATE``: target requests/s per track
* ``TFRP_PAYLOAD``: JSON request body file; ``TFRP_MODEL``: model name
* ``TFRP_SAMPLES``: directory for per-request samples (one CSV per process)

Open loop: each user sends on a fixed schedule (``users / rate`` apart) without
waiting for responses, and a request's latency is measured from its *scheduled*
time, so a stalled server shows up as latency instead of silently lowering the
rate (coordinated omission). ``lag_ms`` records how late the generator itself was.
"""

from __future__ import annotations

import json
import os
import random
import time
from itertools import cycle
from pathlib import Path
from typing import Any

import gevent
from locust import FastHttpUser, constant, events, task

TRACKS: dict[str, list[str]] = json.loads(os.environ.get("TFRP_TRACKS", "{}"))
USERS = int(os.environ.get("TFRP_USERS", "1"))
RATE = float(os.environ.get("TFRP_RATE", "1"))
PAYLOAD = Path(os.environ.get("TFRP_PAYLOAD", "/dev/null")).read_bytes()
MODEL = os.environ.get("TFRP_MODEL", "model")
SAMPLES_DIR = Path(os.environ.get("TFRP_SAMPLES", "."))
PATH = f"/v1/models/{MODEL}:predict"
HEADERS = {"Content-Type": "application/json"}
_samples: list[str] = []
_sent: list[str] = []  # every send, answered or not: the generator's achieved rate


@events.quitting.add_listener  # type: ignore[untyped-decorator]
def _write_samples(**_: Any) -> None:
    SAMPLES_DIR.mkdir(parents=True, exist_ok=True)
    path = SAMPLES_DIR / f"samples-{os.getpid()}.csv"
    with path.open("w") as fh:
        fh.write("t,track,endpoint,latency_ms,service_ms,ok,status,lag_ms\n")
        fh.writelines(_samples)
    with (SAMPLES_DIR / f"sent-{os.getpid()}.csv").open("w") as fh:
        fh.write("t,track\n")
        fh.writelines(_sent)


class _OpenLoopUser(FastHttpUser):
    abstract = True
    track = ""
    wait_time = constant(0)
    concurrency = 64  # connections per user: requests never queue behind each other

    def on_start(self) -> None:
        self.interval = USERS / RATE
        self.next_at = time.perf_counter() + random.uniform(0, self.interval)  # noqa: S311
        self.endpoints = cycle(TRACKS[self.track])

    @task
    def fire(self) -> None:
        delay = self.next_at - time.perf_counter()
        if delay > 0:
            gevent.sleep(delay)
        scheduled = self.next_at
        self.next_at += self.interval
        gevent.spawn(self._one, scheduled, next(self.endpoints))

    def _one(self, scheduled: float, endpoint: str) -> None:
        sent = time.perf_counter()
        _sent.append(f"{time.time():.4f},{self.track}\n")
        status = 0
        ok = False
        with self.client.post(
            f"{endpoint}{PATH}",
            data=PAYLOAD,  # type: ignore[arg-type]  # bytes are sent as-is
            headers=HEADERS,
            name=f"{self.track} predict",
            catch_response=True,
        ) as response:
            status = response.status_code or 0
            ok = status == 200
            if not ok:
                response.failure(f"HTTP {status}")
        done = time.perf_counter()
        _samples.append(
            f"{time.time():.4f},{self.track},{endpoint},{(done - scheduled) * 1e3:.3f},"
            f"{(done - sent) * 1e3:.3f},{int(ok)},{status},"
            f"{(sent - scheduled) * 1e3:.3f}\n"
        )


class CanaryUser(_OpenLoopUser):
    track = "canary"
    fixed_count = USERS if "canary" in TRACKS else 0


class BaselineUser(_OpenLoopUser):
    track = "baseline"
    fixed_count = USERS if "baseline" in TRACKS else 0
