"""A real Kubernetes control plane for the tests, built from Go modules and run on 127.0.0.1.

Build (``make k8s-control-plane``, and ``make test`` when something is missing): etcd,
kube-apiserver, kube-controller-manager, kube-scheduler and kwok from the wrapper
modules beside this file (their go.mod and go.sum are committed), into
``$XDG_CACHE_HOME/tf-release-pipeline/controlplane/<name>-<key>/``, where the key hashes
the wrapper's go.mod, go.sum, the link flags and the Go version: a changed pin builds
anew, an unchanged one is reused. Binaries appear only when complete (built into a
temporary directory, then renamed), and a file lock keeps two builds from racing.

Run (:class:`ControlPlane`): etcd (``--unsafe-no-fsync``) in a temporary directory;
kube-apiserver with generated certificates, ``--authorization-mode=Node,RBAC``, a
service-account issuer and keys and a client-certificate admin; the controller-manager;
the scheduler; and kwok playing the kubelets of a few nodes (stages in stages.yaml,
pod logs served from files through ``Logs`` objects). Every process is stopped on
``stop()``, also after a failed start.

    python -m tests.controlplane build      # make k8s-control-plane
    python -m tests.controlplane up         # make k8s-up: prints `export KUBECONFIG=…`
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import datetime as dt
import fcntl
import hashlib
import ipaddress
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

HERE = Path(__file__).resolve().parent
KUBERNETES_VERSION = "v1.37.2"
ETCD_VERSION = "v3.6.16"
KWOK_VERSION = "v0.8.0"
SERVICE_CIDR = "10.0.0.0/24"
# Nodes shaped like the overlays' GKE node pools (their nodeSelectors name the pools),
# with the allocatable of e2-standard machines, so that the real scheduler packs pods as
# GKE would: one 3.5-CPU production pod per 4-vCPU node, a rolling update's surge pod
# needing a node of its own. Enough nodes for a stable track, its canary and a surge.
# Each carries GKE's machine-family label (e2), which SIGILL diagnosis reads.
FAMILY_LABEL = "cloud.google.com/machine-family"
NODES = tuple(
    (f"{pool}-{index}", pool, family, cpu, memory)
    for pool, family, count, cpu, memory in (
        ("pool-2vcpu", "e2", 8, "1930m", "5Gi"),
        ("pool-4vcpu", "e2", 7, "3920m", "13Gi"),
        ("pool-8vcpu", "e2", 5, "7910m", "28Gi"),
    )
    for index in range(count)
)


def _version_flags() -> str:
    major, minor, _ = KUBERNETES_VERSION.removeprefix("v").split(".")
    pkg = "k8s.io/component-base/version"
    return " ".join(
        [
            "-s -w",
            f"-X {pkg}.gitVersion={KUBERNETES_VERSION}",
            f"-X {pkg}.gitMajor={major}",
            f"-X {pkg}.gitMinor={minor}",
            f"-X {pkg}.gitTreeState=clean",
            f"-X {pkg}.buildDate=1970-01-01T00:00:00Z",
        ]
    )


@dataclass(frozen=True)
class Wrapper:
    """One wrapper module and what to build from it."""

    name: str
    packages: tuple[str, ...]  # main packages; each gives the binary named like its last part
    ldflags: str = "-s -w"
    binary_names: tuple[str, ...] = ()

    @property
    def directory(self) -> Path:
        return HERE / self.name

    @property
    def binaries(self) -> tuple[str, ...]:
        return self.binary_names or tuple(p.rsplit("/", 1)[-1] for p in self.packages)


WRAPPERS = (
    Wrapper(
        "kubernetes",
        (
            "k8s.io/kubernetes/cmd/kube-apiserver",
            "k8s.io/kubernetes/cmd/kube-controller-manager",
            "k8s.io/kubernetes/cmd/kube-scheduler",
        ),
        ldflags=_version_flags(),
    ),
    # go.etcd.io/etcd/server/v3 is the etcd main package itself: name its binary.
    Wrapper("etcd", ("go.etcd.io/etcd/server/v3",), binary_names=("etcd",)),
    Wrapper("kwok", ("sigs.k8s.io/kwok/cmd/kwok",)),
)


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "tf-release-pipeline" / "controlplane"


def _go() -> str:
    go = shutil.which("go")
    if go is None:
        raise RuntimeError("no `go` on PATH: the control plane is built from Go modules (Go 1.26)")
    return go


def _key(wrapper: Wrapper) -> str:
    go_version = subprocess.run(
        [_go(), "env", "GOVERSION"], capture_output=True, text=True, check=True, timeout=60
    ).stdout.strip()
    digest = hashlib.sha256()
    for part in (
        (wrapper.directory / "go.mod").read_bytes(),
        (wrapper.directory / "go.sum").read_bytes(),
        wrapper.ldflags.encode(),
        " ".join(wrapper.packages).encode(),
        go_version.encode(),
    ):
        digest.update(hashlib.sha256(part).digest())
    return digest.hexdigest()[:16]


def build(wrapper: Wrapper, *, quiet: bool = False) -> Path:
    """The wrapper's binaries, built into the cache unless they are there: their directory."""
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{wrapper.name}-{_key(wrapper)}"
    with (root / f".{wrapper.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another build of the same wrapper waits here
        if all((final / b).is_file() for b in wrapper.binaries):
            return final
        staging = Path(tempfile.mkdtemp(prefix=f".{wrapper.name}-", dir=root))
        try:
            started = time.monotonic()
            if not quiet:
                print(
                    f"building {wrapper.name} ({', '.join(wrapper.binaries)})...", file=sys.stderr
                )
            for package, binary in zip(wrapper.packages, wrapper.binaries, strict=True):
                subprocess.run(
                    [
                        _go(),
                        "build",
                        "-mod=readonly",
                        "-trimpath",
                        "-ldflags",
                        wrapper.ldflags,
                        "-o",
                        str(staging / binary),
                        package,
                    ],
                    cwd=wrapper.directory,
                    env={**os.environ, "CGO_ENABLED": "0"},
                    check=True,
                    timeout=3600,
                )
            if final.exists():
                shutil.rmtree(final)
            staging.rename(final)
            if not quiet:
                print(
                    f"built {wrapper.name} in {time.monotonic() - started:.0f} s → {final}",
                    file=sys.stderr,
                )
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return final


def build_all(*, quiet: bool = False) -> dict[str, Path]:
    """Every binary of the control plane, by name (built where missing)."""
    found: dict[str, Path] = {}
    for wrapper in WRAPPERS:
        directory = build(wrapper, quiet=quiet)
        found |= {name: directory / name for name in wrapper.binaries}
    return found


# -- certificates ---------------------------------------------------------------------------
@dataclass
class Pki:
    """A CA and what the control plane needs signed by it (EC P-256: fast to make)."""

    directory: Path
    ca_key: ec.EllipticCurvePrivateKey = field(init=False)
    ca_cert: x509.Certificate = field(init=False)

    def __post_init__(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.ca_key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tf-release-pipeline test CA")])
        now = dt.datetime.now(dt.UTC)
        self.ca_cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(self.ca_key, hashes.SHA256())
        )
        self.ca_path.write_bytes(self.ca_cert.public_bytes(serialization.Encoding.PEM))

    @property
    def ca_path(self) -> Path:
        return self.directory / "ca.crt"

    def issue(
        self,
        name: str,
        *,
        common_name: str,
        organizations: tuple[str, ...] = (),
        server: bool = False,
        dns: tuple[str, ...] = (),
        ips: tuple[str, ...] = (),
    ) -> tuple[Path, Path]:
        key = ec.generate_private_key(ec.SECP256R1())
        attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
        attributes += [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
        now = dt.datetime.now(dt.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(attributes))
            .issuer_name(self.ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=2))
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
        )
        if dns or ips:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName(d) for d in dns]
                    + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
                ),
                critical=False,
            )
        cert = builder.sign(self.ca_key, hashes.SHA256())
        cert_path, key_path = self.directory / f"{name}.crt", self.directory / f"{name}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        key_path.chmod(0o600)
        return cert_path, key_path

    def service_account_keys(self) -> tuple[Path, Path]:
        key = ec.generate_private_key(ec.SECP256R1())
        private, public = self.directory / "sa.key", self.directory / "sa.pub"
        private.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        public.write_bytes(
            key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        return private, public


_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child, before exec: killed when the parent dies, even by SIGKILL, so a killed
    test run never leaves a control plane behind (SIGKILL: with every process told at
    once, a gracefully stopping API server would wait a minute for a gone etcd)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# -- the control plane ----------------------------------------------------------------------
class ControlPlaneError(RuntimeError):
    pass


CLUSTER_SCOPED = {
    "Node",
    "Namespace",
    "CustomResourceDefinition",
    "ClusterRole",
    "ClusterRoleBinding",
}
PLURALS = {"CustomResourceDefinition": "customresourcedefinitions", "Logs": "logs"}


def _path_for(obj: dict[str, Any]) -> str:
    """The REST path of an object (the few kinds the fixture and tests apply)."""
    api_version, kind = obj["apiVersion"], obj["kind"]
    prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    plural = PLURALS.get(kind, kind.lower() + "s")
    name = obj["metadata"]["name"]
    if kind in CLUSTER_SCOPED:
        return f"{prefix}/{plural}/{name}"
    return f"{prefix}/namespaces/{obj['metadata']['namespace']}/{plural}/{name}"


@dataclass
class ControlPlane:
    """etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok on 127.0.0.1."""

    binaries: dict[str, Path]
    workdir: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    server: str = ""
    kubeconfig: Path = Path()
    pki: Pki | None = None
    startup_s: float = 0.0

    # -- lifecycle -----------------------------------------------------------------------
    def start(self, timeout_s: float = 120.0) -> ControlPlane:
        started = time.monotonic()
        try:
            self._start(timeout_s)
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.monotonic() - started
        return self

    def _start(self, timeout_s: float) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "logs").mkdir(exist_ok=True)
        pki = self.pki = Pki(self.workdir / "pki")
        api_cert, api_key = pki.issue(
            "apiserver",
            common_name="kube-apiserver",
            server=True,
            dns=(
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ),
            ips=("127.0.0.1", "10.0.0.1"),
        )
        admin_cert, admin_key = pki.issue(
            "admin", common_name="test-admin", organizations=("system:masters",)
        )
        kubelet_client = pki.issue(
            "apiserver-kubelet-client",
            common_name="kube-apiserver-kubelet-client",
            organizations=("system:masters",),
        )
        kwok_cert, kwok_key = pki.issue(
            "kwok", common_name="kwok", server=True, dns=("localhost",), ips=("127.0.0.1",)
        )
        sa_private, sa_public = pki.service_account_keys()

        etcd_port, peer_port, api_port = free_port(), free_port(), free_port()
        self.server = f"https://127.0.0.1:{api_port}"
        self.kubeconfig = self.write_kubeconfig("admin", admin_cert, admin_key)
        self._spawn(
            "etcd",
            [
                "--name=test",
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls=http://127.0.0.1:{etcd_port}",
                f"--advertise-client-urls=http://127.0.0.1:{etcd_port}",
                f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-cluster=test=http://127.0.0.1:{peer_port}",
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
        )
        self._spawn(
            "kube-apiserver",
            [
                f"--etcd-servers=http://127.0.0.1:{etcd_port}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={api_port}",
                f"--tls-cert-file={api_cert}",
                f"--tls-private-key-file={api_key}",
                f"--client-ca-file={pki.ca_path}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={sa_public}",
                f"--service-account-signing-key-file={sa_private}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--authorization-mode=Node,RBAC",
                f"--kubelet-client-certificate={kubelet_client[0]}",
                f"--kubelet-client-key={kubelet_client[1]}",
                "--kubelet-preferred-address-types=InternalIP",
                "--allow-privileged=true",
                # 127.0.0.1 cannot be the kubernetes Service's endpoint (a loopback address)
                "--endpoint-reconciler-type=none",
                "--profiling=false",
                f"--cert-dir={self.workdir / 'pki'}",
            ],
        )
        self._wait_ready(timeout_s)
        controller_port, scheduler_port = free_port(), free_port()
        self._spawn(
            "kube-controller-manager",
            [
                f"--kubeconfig={self.kubeconfig}",
                f"--authentication-kubeconfig={self.kubeconfig}",
                f"--authorization-kubeconfig={self.kubeconfig}",
                f"--service-account-private-key-file={sa_private}",
                f"--root-ca-file={pki.ca_path}",
                "--use-service-account-credentials=false",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={controller_port}",
                f"--cert-dir={self.workdir / 'pki' / 'controller-manager'}",
                "--profiling=false",
            ],
        )
        self._spawn(
            "kube-scheduler",
            [
                f"--kubeconfig={self.kubeconfig}",
                f"--authentication-kubeconfig={self.kubeconfig}",
                f"--authorization-kubeconfig={self.kubeconfig}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={scheduler_port}",
                f"--cert-dir={self.workdir / 'pki' / 'scheduler'}",
                "--profiling=false",
            ],
        )
        self.apply(yaml.safe_load((HERE / "logs-crd.yaml").read_text()))
        self._wait_for(
            "the Logs CRD to be served",
            lambda: self._get("/apis/kwok.x-k8s.io/v1alpha1/logs") is not None,
            timeout_s,
        )
        kwok_port = free_port()
        self._spawn(
            "kwok",
            [
                f"--kubeconfig={self.kubeconfig}",
                f"--config={HERE / 'stages.yaml'}",
                "--manage-all-nodes=true",
                "--node-ip=127.0.0.1",
                f"--node-port={kwok_port}",
                f"--server-address=127.0.0.1:{kwok_port}",
                f"--tls-cert-file={kwok_cert}",
                f"--tls-private-key-file={kwok_key}",
                "--enable-crds=Logs",
            ],
        )
        for name, pool, family, cpu, memory in NODES:
            self.apply(
                {
                    "apiVersion": "v1",
                    "kind": "Node",
                    "metadata": {
                        "name": name,
                        "annotations": {
                            "kwok.x-k8s.io/node": "fake",
                            "node.alpha.kubernetes.io/ttl": "0",
                        },
                        "labels": {
                            "kubernetes.io/hostname": name,
                            "kubernetes.io/os": "linux",
                            "kubernetes.io/arch": "amd64",
                            "type": "kwok",
                            "cloud.google.com/gke-nodepool": pool,
                            FAMILY_LABEL: family,
                        },
                    },
                    "status": {
                        "allocatable": {"cpu": cpu, "memory": memory, "pods": "110"},
                        "capacity": {"cpu": cpu, "memory": memory, "pods": "110"},
                    },
                }
            )
        self._wait_for("the kwok nodes to be Ready", self._nodes_ready, timeout_s)

    def stop(self) -> None:
        """Stop every process (children first), also after a failed start."""
        # One at a time, clients first: the API server shuts down fast while etcd is up.
        for name in reversed(list(self.processes)):
            process = self.processes[name]
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        self.processes.clear()

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- helpers -------------------------------------------------------------------------
    def _spawn(self, name: str, args: list[str]) -> None:
        log = (self.workdir / "logs" / f"{name}.log").open("wb")
        try:
            self.processes[name] = subprocess.Popen(
                [str(self.binaries[name]), *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                start_new_session=True,  # stopped by stop(), not by a terminal's Ctrl-C
                preexec_fn=_die_with_parent,  # noqa: PLW1509 - only prctl, no locks
            )
        finally:
            log.close()

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.workdir / "logs" / f"{name}.log"
        return (
            "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
            if path.exists()
            else ""
        )

    def _check_alive(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise ControlPlaneError(
                    f"{name} exited with {process.returncode}:\n{self.log_tail(name)}"
                )

    def _wait_for(self, what: str, ready: Any, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            self._check_alive()
            try:
                if ready():
                    return
            except (OSError, urllib.error.URLError, ssl.SSLError):
                pass
            if time.monotonic() > deadline:
                raise ControlPlaneError(f"timed out waiting for {what}")
            time.sleep(0.2)

    def _ssl(self) -> ssl.SSLContext:
        assert self.pki is not None
        context = ssl.create_default_context(cafile=str(self.pki.ca_path))
        context.load_cert_chain(self.pki.directory / "admin.crt", self.pki.directory / "admin.key")
        return context

    def _request(
        self, method: str, path: str, body: Any = None, content_type: str = "application/json"
    ) -> Any:
        import json

        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.server + path, data=data, method=method, headers={"Content-Type": content_type}
        )
        with urllib.request.urlopen(request, context=self._ssl(), timeout=10) as response:
            payload = response.read()
        return json.loads(payload) if payload else None

    def _get(self, path: str) -> Any:
        try:
            return self._request("GET", path)
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise

    def _wait_ready(self, timeout_s: float) -> None:
        def ready() -> bool:
            request = urllib.request.Request(self.server + "/readyz")
            with urllib.request.urlopen(request, context=self._ssl(), timeout=5) as response:
                return bool(response.status == 200)

        self._wait_for("kube-apiserver /readyz", ready, timeout_s)

    def _nodes_ready(self) -> bool:
        nodes = (self._get("/api/v1/nodes") or {}).get("items", [])
        ready = [
            n
            for n in nodes
            if any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in n.get("status", {}).get("conditions", [])
            )
        ]
        return len(ready) == len(NODES)

    def apply(self, obj: dict[str, Any]) -> Any:
        """Server-side apply as the test admin (cluster-scoped or namespaced)."""
        return self._request(
            "PATCH",
            _path_for(obj) + "?fieldManager=test-controlplane&force=true",
            obj,
            "application/apply-patch+yaml",
        )

    # -- for tests -----------------------------------------------------------------------
    def get(self, path: str) -> Any:
        """GET an API path as the test admin (None on 404)."""
        return self._get(path)

    def merge_patch(self, path: str, body: dict[str, Any]) -> Any:
        return self._request("PATCH", path, body, "application/merge-patch+json")

    def text(self, path: str) -> str | None:
        """GET a text answer (a pod's log) as the test admin; None when not (yet) there."""
        request = urllib.request.Request(self.server + path)
        try:
            with urllib.request.urlopen(request, context=self._ssl(), timeout=10) as response:
                return str(response.read().decode("utf-8", errors="replace"))
        except urllib.error.HTTPError:
            return None

    def write_kubeconfig(self, user: str, cert: Path, key: Path) -> Path:
        assert self.pki is not None
        path = self.workdir / f"kubeconfig-{user}"

        def b64(p: Path) -> str:
            return base64.b64encode(p.read_bytes()).decode()

        path.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "current-context": "test",
                    "clusters": [
                        {
                            "name": "test",
                            "cluster": {
                                "server": self.server,
                                "certificate-authority-data": b64(self.pki.ca_path),
                            },
                        }
                    ],
                    "users": [
                        {
                            "name": user,
                            "user": {
                                "client-certificate-data": b64(cert),
                                "client-key-data": b64(key),
                            },
                        }
                    ],
                    "contexts": [{"name": "test", "context": {"cluster": "test", "user": user}}],
                }
            )
        )
        path.chmod(0o600)
        return path

    def identity(self, user: str, groups: tuple[str, ...] = ()) -> Path:
        """A kubeconfig for another identity (client certificate CN=user, O=groups)."""
        assert self.pki is not None
        cert, key = self.pki.issue(f"user-{user}", common_name=user, organizations=groups)
        return self.write_kubeconfig(user, cert, key)

    def create_namespace(self, name: str, timeout_s: float = 60.0) -> None:
        """A namespace, handed out once its `default` ServiceAccount exists (pods need it)."""
        self.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
        self._wait_for(
            f"the default ServiceAccount of {name}",
            lambda: self._get(f"/api/v1/namespaces/{name}/serviceaccounts/default") is not None,
            timeout_s,
        )

    def delete_namespace(self, name: str) -> None:
        with contextlib.suppress(urllib.error.HTTPError):
            self._request("DELETE", f"/api/v1/namespaces/{name}")


@contextlib.contextmanager
def running(workdir: Path | None = None) -> Iterator[ControlPlane]:
    """Build what is missing, start, yield, and always stop."""
    binaries = build_all(quiet=True)
    with tempfile.TemporaryDirectory(prefix="controlplane-") as tmp:
        plane = ControlPlane(binaries, workdir or Path(tmp))
        with plane:
            yield plane
