"""Registry credentials: ~/.docker/config.json (auths, credHelpers, credsStore) and
Google Application Default Credentials for Artifact Registry.

Secrets never reach a log line: only where a credential came from is logged.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scripts.errors import AuthError
from scripts.log import log

GAR_USER = "oauth2accesstoken"
_GOOGLE_SCOPE = "https://www.googleapis.com/auth/cloud-platform"


@dataclass(frozen=True)
class Credential:
    username: str
    password: str
    origin: str  # where it came from, for logs

    def __repr__(self) -> str:  # never print the secret
        return f"Credential(username={self.username!r}, origin={self.origin!r})"


def is_artifact_registry(host: str) -> bool:
    return host.endswith((".pkg.dev",))


def _google_access_token() -> str:
    try:
        import google.auth
        import google.auth.transport.requests
        from google.auth.exceptions import DefaultCredentialsError, RefreshError
    except ImportError as exc:  # pragma: no cover - google-auth is a dependency
        raise AuthError("google-auth is not installed") from exc
    try:
        creds, _project = google.auth.default(scopes=[_GOOGLE_SCOPE])
        creds.refresh(google.auth.transport.requests.Request())  # type: ignore[no-untyped-call]
    except (DefaultCredentialsError, RefreshError) as exc:
        raise AuthError(
            f"no Google credentials for Artifact Registry: {exc}",
            cause="Application Default Credentials are not configured or expired",
            fix="run `gcloud auth application-default login`; in Actions use "
            "google-github-actions/auth (Workload Identity Federation)",
        ) from exc
    return str(creds.token)


class CredentialStore:
    """Looks credentials up by registry host; resolved lazily, cached per host."""

    def __init__(self, docker_config: Path | None, *, use_google_adc: bool = True) -> None:
        self._config_path = docker_config
        self._use_google = use_google_adc
        self._config: dict[str, Any] | None = None
        self._cache: dict[str, Credential | None] = {}

    def _load(self) -> dict[str, Any]:
        if self._config is None:
            self._config = {}
            if self._config_path and self._config_path.is_file():
                try:
                    loaded = json.loads(self._config_path.read_text(encoding="utf-8"))
                except json.JSONDecodeError as exc:
                    raise AuthError(
                        f"{self._config_path} is not valid JSON: {exc}",
                        cause="a hand-edited or truncated Docker config",
                        fix="fix the file or run `docker login` again",
                    ) from exc
                if isinstance(loaded, dict):
                    self._config = loaded
        return self._config

    def _from_helper(self, helper: str, host: str) -> Credential | None:
        program = f"docker-credential-{helper}"
        if shutil.which(program) is None:
            raise AuthError(
                f"credential helper {program} for {host} is not installed",
                cause="~/.docker/config.json names a helper this machine lacks",
                fix=f"install {program}, or remove the entry for {host}",
            )
        proc = subprocess.run(
            [program, "get"], input=host, capture_output=True, text=True, timeout=60, check=False
        )
        if proc.returncode != 0:
            if "credentials not found" in proc.stdout + proc.stderr:
                return None
            raise AuthError(
                f"credential helper {program} failed for {host}: {proc.stderr.strip()[:200]}",
                cause="the helper is not logged in",
                fix=f"log in with the helper's tool (e.g. gcloud auth login) for {host}",
            )
        data = json.loads(proc.stdout)
        return Credential(data.get("Username", ""), data.get("Secret", ""), f"helper {helper}")

    def _from_config(self, host: str) -> Credential | None:
        config = self._load()
        helper = (config.get("credHelpers") or {}).get(host)
        if helper:
            return self._from_helper(helper, host)
        auths = config.get("auths") or {}
        entry = None
        for key in (
            host,
            f"https://{host}",
            f"http://{host}",
            f"https://{host}/v1/",
            f"https://{host}/v2/",
        ):
            if key in auths:
                entry = auths[key]
                break
        if entry:
            if entry.get("identitytoken"):
                return Credential("<token>", entry["identitytoken"], "docker config identitytoken")
            if entry.get("auth"):
                user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
                return Credential(user, password, "docker config auths")
            if entry.get("username"):
                return Credential(
                    entry["username"], entry.get("password", ""), "docker config auths"
                )
        store = config.get("credsStore")
        if store:
            return self._from_helper(store, host)
        return None

    def lookup(self, host: str) -> Credential | None:
        """Credentials for ``host``, or None for anonymous access."""
        if host in self._cache:
            return self._cache[host]
        cred = self._from_config(host)
        if cred is None and self._use_google and is_artifact_registry(host):
            cred = Credential(GAR_USER, _google_access_token(), "Application Default Credentials")
        if cred is not None:
            log.info("registry %s: using credentials from %s", host, cred.origin)
        self._cache[host] = cred
        return cred
