"""What the REST and gRPC locustfiles share: the runner's settings, open-loop pacing, samples.

Imported only inside Locust's process (the runner puts the repository on PYTHONPATH),
after Locust has monkey-patched the standard library with gevent. Configured by
environment variables the runner sets:

* ``TFRP_TRACKS``: JSON ``{"canary": [endpoint, ...], "baseline": [endpoint, ...]}``
* ``TFRP_USERS``: users per track; ``TFRP_RATE``: target requests/s per track
* ``TFRP_PAYLOAD``: request body file (REST JSON, or PredictRequest bytes for gRPC)
* ``TFRP_MODEL``: model name; ``TFRP_SAMPLES``: directory for per-request samples
* ``TFRP_TAIL_S``: when Locust stops, how long requests still in flight may take to
  finish before the samples are written

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
from locust import events

TRACKS: dict[str, list[str]] = json.loads(os.environ.get("TFRP_TRACKS", "{}"))
USERS = int(os.environ.get("TFRP_USERS", "1"))
RATE = float(os.environ.get("TFRP_RATE", "1"))
PAYLOAD = Path(os.environ.get("TFRP_PAYLOAD", "/dev/null")).read_bytes()
MODEL = os.environ.get("TFRP_MODEL", "model")
SAMPLES_DIR = Path(os.environ.get("TFRP_SAMPLES", "."))
TAIL_S = float(os.environ.get("TFRP_TAIL_S", "2"))
SAMPLE_HEADER = "t,track,endpoint,latency_ms,service_ms,ok,status,lag_ms\n"
_samples: list[str] = []
_sent: list[str] = []  # every send, answered or not: the generator's achieved rate
_in_flight: set[gevent.Greenlet] = set()  # requests sent and not yet answered


@events.quitting.add_listener  # type: ignore[untyped-decorator]
def _write_samples(**_: Any) -> None:
    # Locust has stopped the users: let the requests still in flight be answered (and
    # measured) first, for at most TAIL_S.
    gevent.joinall(list(_in_flight), timeout=TAIL_S)
    SAMPLES_DIR.mkdir(parents=True, exist_ok=True)
    with (SAMPLES_DIR / f"samples-{os.getpid()}.csv").open("w") as fh:
        fh.write(SAMPLE_HEADER)
        fh.writelines(_samples)
    with (SAMPLES_DIR / f"sent-{os.getpid()}.csv").open("w") as fh:
        fh.write("t,track\n")
        fh.writelines(_sent)


class OpenLoop:
    """Mixed into a Locust user: ``tick()`` is its task; subclasses implement ``send``."""

    track = ""

    def start_schedule(self) -> None:
        self.interval = USERS / RATE
        self.next_at = time.perf_counter() + random.uniform(0, self.interval)  # noqa: S311
        self.endpoint_cycle = cycle(TRACKS[self.track])

    def tick(self) -> None:
        delay = self.next_at - time.perf_counter()
        if delay > 0:
            gevent.sleep(delay)
        scheduled = self.next_at
        self.next_at += self.interval
        request = gevent.spawn(self._one, scheduled, next(self.endpoint_cycle))
        _in_flight.add(request)
        request.link(_in_flight.discard)

    def send(self, endpoint: str) -> tuple[bool, int]:
        """Send one request; (ok, status). Must not raise."""
        raise NotImplementedError

    def _one(self, scheduled: float, endpoint: str) -> None:
        sent = time.perf_counter()
        _sent.append(f"{time.time():.4f},{self.track}\n")
        ok, status = self.send(endpoint)
        done = time.perf_counter()
        _samples.append(
            f"{time.time():.4f},{self.track},{endpoint},{(done - scheduled) * 1e3:.3f},"
            f"{(done - sent) * 1e3:.3f},{int(ok)},{status},"
            f"{(sent - scheduled) * 1e3:.3f}\n"
        )
