"""Locust user for TF Serving's REST API: row JSON (b64 for binary inputs), open loop.

Run by scripts/loadtest/runner.py as a subprocess (never imported by the pipeline:
gevent monkey-patching must not touch the pipeline's own process). Pacing, settings
and samples: scripts/loadtest/openloop.py.
"""

from __future__ import annotations

from locust import FastHttpUser, constant, task

from scripts.loadtest.openloop import MODEL, PAYLOAD, TRACKS, USERS, OpenLoop

PATH = f"/v1/models/{MODEL}:predict"
HEADERS = {"Content-Type": "application/json"}


class _RestUser(OpenLoop, FastHttpUser):
    abstract = True
    wait_time = constant(0)
    concurrency = 64  # connections per user: requests never queue behind each other

    def on_start(self) -> None:
        self.start_schedule()

    @task
    def fire(self) -> None:
        self.tick()

    def send(self, endpoint: str) -> tuple[bool, int]:
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
        return ok, status


class CanaryUser(_RestUser):
    track = "canary"
    fixed_count = USERS if "canary" in TRACKS else 0


class BaselineUser(_RestUser):
    track = "baseline"
    fixed_count = USERS if "baseline" in TRACKS else 0
