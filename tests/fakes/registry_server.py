"""The real registry (Debian's ``docker-registry``, CNCF distribution 2.8) on 127.0.0.1.

Each instance gets its own config file and storage directory. Modes:
anonymous, htpasswd basic auth, and bearer tokens issued by a small loopback
token server (:class:`TokenServer`) whose JWTs the registry verifies against
our own certificate, as it would a real token service's.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import secrets
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import bcrypt
import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from tests.conftest import free_port

BINARY = "docker-registry"
SERVICE = "test-registry"
ISSUER = "test-token-issuer"


def registry_available() -> bool:
    return shutil.which(BINARY) is not None


class TokenServer:
    """Issues registry bearer tokens (RS256 JWT with an x5c chain) for basic credentials."""

    def __init__(self, users: dict[str, str], workdir: Path) -> None:
        self.users = users
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test token signer")])
        now = dt.datetime.now(dt.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.cert_path = workdir / "token-cert.pem"
        self.cert_path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        self.server = HTTPServer(host="127.0.0.1", port=0)
        self.requests: list[dict[str, Any]] = []

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self.server.port}/token"

    def start(self) -> None:
        self.server.expect_request("/token").respond_with_handler(self._token)
        self.server.start()

    def stop(self) -> None:
        if self.server.is_running():
            self.server.clear()
            self.server.stop()

    def _token(self, request: Request) -> Response:
        auth = request.authorization
        user = auth.username if auth else None
        if auth is not None and self.users.get(auth.username or "") != auth.password:
            return Response('{"details":"invalid credentials"}', status=401)
        scopes = request.args.getlist("scope")
        self.requests.append(
            {"user": user, "scopes": scopes, "service": request.args.get("service")}
        )
        access = []
        for scope in " ".join(scopes).split():
            kind, _, rest = scope.partition(":")
            repo, _, actions = rest.rpartition(":")
            granted = actions.split(",") if user else [a for a in actions.split(",") if a == "pull"]
            access.append({"type": kind, "name": repo, "actions": granted})
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "sub": user or "",
            "aud": SERVICE,
            "exp": now + 300,
            "nbf": now - 10,
            "iat": now,
            "jti": secrets.token_hex(8),
            "access": access,
        }
        der = self.cert.public_bytes(serialization.Encoding.DER)
        token = jwt.encode(
            claims, self.key, algorithm="RS256", headers={"x5c": [base64.b64encode(der).decode()]}
        )
        return Response(
            json.dumps({"token": token, "expires_in": 300}), content_type="application/json"
        )


class RegistryServer:
    """``docker-registry serve`` with its own config and storage, bound to 127.0.0.1."""

    def __init__(self, *, users: dict[str, str] | None = None, token: bool = False) -> None:
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self._tmp = tempfile.TemporaryDirectory(prefix="registry-")
        self.workdir = Path(self._tmp.name)
        self.users = users or {}
        self.token_server = TokenServer(self.users, self.workdir) if token else None
        self._proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.workdir / "registry.log"

    def _config(self) -> dict[str, Any]:
        config: dict[str, Any] = {
            "version": 0.1,
            "log": {"level": "info", "accesslog": {"disabled": True}},
            "storage": {
                "filesystem": {"rootdirectory": str(self.workdir / "data")},
                "delete": {"enabled": True},
                "cache": {"blobdescriptor": "inmemory"},
            },
            "http": {"addr": self.host, "secret": secrets.token_hex(16)},
        }
        if self.token_server is not None:
            config["auth"] = {
                "token": {
                    "realm": self.token_server.realm,
                    "service": SERVICE,
                    "issuer": ISSUER,
                    "rootcertbundle": str(self.token_server.cert_path),
                }
            }
        elif self.users:
            htpasswd = self.workdir / "htpasswd"
            htpasswd.write_text(
                "".join(
                    f"{u}:{bcrypt.hashpw(p.encode(), bcrypt.gensalt(rounds=4)).decode()}\n"
                    for u, p in self.users.items()
                )
            )
            config["auth"] = {"htpasswd": {"realm": "test", "path": str(htpasswd)}}
        return config

    def start(self) -> RegistryServer:
        if self.token_server is not None:
            self.token_server.start()
        config_path = self.workdir / "config.yml"
        config_path.write_text(json.dumps(self._config()))  # JSON is YAML
        with self.log_path.open("wb") as log:
            self._proc = subprocess.Popen(
                [BINARY, "serve", str(config_path)], stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"registry exited: {self.log_path.read_text()[-2000:]}")
            try:
                urllib.request.urlopen(f"http://{self.host}/v2/", timeout=1).close()
                return self
            except urllib.error.HTTPError as exc:
                if exc.code == 401:  # up, and asking for credentials
                    return self
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("registry did not start in 15 s")

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None
        if self.token_server is not None:
            self.token_server.stop()
        self._tmp.cleanup()

    def docker_config(self, path: Path, user: str, password: str) -> Path:
        """Write a ~/.docker/config.json with basic credentials for this registry."""
        auth = base64.b64encode(f"{user}:{password}".encode()).decode()
        path.write_text(json.dumps({"auths": {self.host: {"auth": auth}}}))
        return path

    def __enter__(self) -> RegistryServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
