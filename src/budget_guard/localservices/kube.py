"""A real Kubernetes API server on loopback: etcd + kube-apiserver with RBAC on.

The binaries are built from the Go module proxy by ``tools/build-test-binaries.sh``
(``make test`` does it) and found through ``BUDGET_GUARD_TEST_BIN_DIR``. There are
no kubelets: what is tested is what the API server itself does (schemas, CEL,
status, Events, RBAC, dry-run), with the operator and webhook as local processes.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import secrets
import shutil
import ssl
import subprocess
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from budget_guard.localservices.processes import (
    LocalService,
    ManagedProcess,
    ServiceStartError,
    free_port,
    wait_until,
)

BIN_DIR_VARIABLE = "BUDGET_GUARD_TEST_BIN_DIR"


@dataclass(frozen=True)
class KubeBinaries:
    etcd: Path
    kube_apiserver: Path
    kubectl: Path
    helm: Path

    @classmethod
    def from_dir(cls, bin_dir: Path) -> KubeBinaries:
        binaries = cls(
            etcd=bin_dir / "etcd",
            kube_apiserver=bin_dir / "kube-apiserver",
            kubectl=bin_dir / "kubectl",
            helm=bin_dir / "helm",
        )
        missing = [str(path) for path in binaries.all() if not os.access(path, os.X_OK)]
        if missing:
            raise ServiceStartError(
                "Kubernetes test binaries missing: " + ", ".join(missing) + ". "
                "Build them with 'tools/build-test-binaries.sh' (make test does this)."
            )
        return binaries

    @classmethod
    def locate(cls) -> KubeBinaries:
        bin_dir = os.environ.get(BIN_DIR_VARIABLE)
        if not bin_dir:
            raise ServiceStartError(
                f"{BIN_DIR_VARIABLE} is not set. Run the tests through 'make test', or set it "
                "to the directory printed by 'tools/build-test-binaries.sh'."
            )
        return cls.from_dir(Path(bin_dir))

    def all(self) -> tuple[Path, ...]:
        return (self.etcd, self.kube_apiserver, self.kubectl, self.helm)


@dataclass(frozen=True)
class _Pki:
    ca_path: Path
    cert_path: Path
    key_path: Path
    service_account_key_path: Path


def _write_pem(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    path.chmod(0o600)
    return path


def _make_pki(directory: Path) -> _Pki:
    """A CA, a serving certificate for 127.0.0.1, and the ServiceAccount signing key."""
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "budget-guard-test-ca")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    serving_key = ec.generate_private_key(ec.SECP256R1())
    serving_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]))
        .issuer_name(ca_name)
        .public_key(serving_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    x509.DNSName("localhost"),
                    x509.DNSName("kubernetes.default.svc"),
                ]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    service_account_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    no_password = serialization.NoEncryption()
    return _Pki(
        ca_path=_write_pem(directory / "ca.crt", ca_cert.public_bytes(serialization.Encoding.PEM)),
        cert_path=_write_pem(
            directory / "apiserver.crt", serving_cert.public_bytes(serialization.Encoding.PEM)
        ),
        key_path=_write_pem(
            directory / "apiserver.key",
            serving_key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, no_password
            ),
        ),
        service_account_key_path=_write_pem(
            directory / "sa.key",
            service_account_key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, no_password
            ),
        ),
    )


class KubeAPIServer(LocalService):
    """etcd + kube-apiserver for one test session (or ``make cluster``).

    ``kubeconfig_path`` authenticates as an admin (group ``system:masters``);
    ``mint_service_account_token`` returns a token for any ServiceAccount through
    the TokenRequest API, so code can run with exactly the RBAC a chart grants.
    """

    def __init__(
        self,
        binaries: KubeBinaries,
        workdir: Path | None = None,
        start_timeout_seconds: float = 120.0,
    ) -> None:
        self.binaries = binaries
        self._owns_workdir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="budget-guard-kube-"))
        self._start_timeout = start_timeout_seconds
        self._processes: list[ManagedProcess] = []
        self.admin_token = secrets.token_urlsafe(24)
        self.port = 0
        self.kubeconfig_path = self.workdir / "kubeconfig"
        self._pki: _Pki | None = None
        self._etcd_url = ""
        self._ssl_context: ssl.SSLContext | None = None

    # -- lifecycle ---------------------------------------------------------

    @property
    def server_url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def ca_path(self) -> Path:
        if self._pki is None:
            raise RuntimeError("the API server is not started")
        return self._pki.ca_path

    def start(self) -> KubeAPIServer:
        self._pki = _make_pki(self.workdir / "pki")
        self._ssl_context = ssl.create_default_context(cafile=str(self._pki.ca_path))
        self._etcd_url = self._start_etcd()
        self._start_apiserver(self._etcd_url, self._pki)
        self.write_kubeconfig(self.kubeconfig_path, self.admin_token, "admin")
        return self

    def _start_etcd(self) -> str:
        client_port, peer_port = free_port(), free_port()
        client_url = f"http://127.0.0.1:{client_port}"
        peer_url = f"http://127.0.0.1:{peer_port}"
        argv = [
            str(self.binaries.etcd),
            "--name",
            "budget-guard-test",
            "--data-dir",
            str(self.workdir / "etcd"),
            "--listen-client-urls",
            client_url,
            "--advertise-client-urls",
            client_url,
            "--listen-peer-urls",
            peer_url,
            "--initial-advertise-peer-urls",
            peer_url,
            "--initial-cluster",
            f"budget-guard-test={peer_url}",
            "--unsafe-no-fsync",
            "--log-level",
            "warn",
        ]
        etcd = ManagedProcess("etcd", argv, self.workdir / "etcd.log")
        self._processes.append(etcd)

        def healthy() -> bool:
            with urllib.request.urlopen(f"{client_url}/health", timeout=1) as answer:  # noqa: S310
                return bool(json.loads(answer.read()).get("health") == "true")

        wait_until(healthy, etcd, self._start_timeout, "healthy")
        return client_url

    def restart_apiserver(self) -> None:
        """Stop the API server (SIGTERM) and start it again on the same port, over the same
        etcd: what clients see when the control plane restarts. Call it from the main
        thread: a child dies with the thread that started it (PR_SET_PDEATHSIG)."""
        self.stop_apiserver()
        self.start_apiserver()

    def stop_apiserver(self) -> None:
        """Stop only the API server; etcd and the port stay, for ``start_apiserver``."""
        if self._pki is None or len(self._processes) < 2:
            raise RuntimeError("the API server is not running")
        self._processes.pop().stop()

    def start_apiserver(self) -> None:
        """Start the API server again after ``stop_apiserver``, on the same port."""
        if self._pki is None or len(self._processes) != 1:
            raise RuntimeError("etcd alone should be running")
        self._start_apiserver(self._etcd_url, self._pki, self.port)

    def _start_apiserver(self, etcd_url: str, pki: _Pki, port: int = 0) -> None:
        self.port = port or free_port()
        tokens = self.workdir / "tokens.csv"
        tokens.write_text(f'{self.admin_token},admin,admin,"system:masters"\n')
        tokens.chmod(0o600)
        argv = [
            str(self.binaries.kube_apiserver),
            f"--etcd-servers={etcd_url}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={self.port}",
            f"--cert-dir={self.workdir / 'pki'}",
            f"--tls-cert-file={pki.cert_path}",
            f"--tls-private-key-file={pki.key_path}",
            f"--client-ca-file={pki.ca_path}",
            "--service-cluster-ip-range=10.0.0.0/24",
            "--authorization-mode=RBAC",
            f"--token-auth-file={tokens}",
            f"--service-account-issuer={self.server_url}",
            f"--service-account-key-file={pki.service_account_key_path}",
            f"--service-account-signing-key-file={pki.service_account_key_path}",
            "--disable-admission-plugins=ServiceAccount",
            "--profiling=false",
            "--v=0",
        ]
        apiserver = ManagedProcess("kube-apiserver", argv, self.workdir / "kube-apiserver.log")
        self._processes.append(apiserver)
        wait_until(
            lambda: self.request("GET", "/readyz")[0] == 200,
            apiserver,
            self._start_timeout,
            "ready (GET /readyz)",
        )

    def stop(self) -> None:
        for process in reversed(self._processes):
            process.stop()
        self._processes.clear()
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def pids(self) -> list[int]:
        return [process.pid for process in self._processes]

    # -- clients -------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        token: str | None = None,
    ) -> tuple[int, Any]:
        """One API call; returns (status, decoded JSON or text), never raises on 4xx/5xx."""
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(  # noqa: S310 - the URL is our own https server
            self.server_url + path, data=data, method=method
        )
        request.add_header("Authorization", f"Bearer {token or self.admin_token}")
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(  # noqa: S310
                request, timeout=10, context=self._ssl_context
            ) as answer:
                return answer.status, _decode(answer.read())
        except urllib.error.HTTPError as error:
            return error.code, _decode(error.read())

    def mint_service_account_token(
        self,
        namespace: str,
        service_account: str,
        expiration_seconds: int = 3600,
        audiences: list[str] | None = None,
    ) -> str:
        """A bound token for the ServiceAccount, through the TokenRequest API."""
        spec: dict[str, Any] = {"expirationSeconds": expiration_seconds}
        if audiences:
            spec["audiences"] = audiences
        status, answer = self.request(
            "POST",
            f"/api/v1/namespaces/{namespace}/serviceaccounts/{service_account}/token",
            {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec},
        )
        if status != 201:
            raise RuntimeError(f"TokenRequest for {namespace}/{service_account} failed: {answer}")
        return str(answer["status"]["token"])

    def write_kubeconfig(self, path: Path, token: str, user: str) -> Path:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "budget-guard-test",
                    "cluster": {
                        "server": self.server_url,
                        "certificate-authority": str(self.ca_path),
                    },
                }
            ],
            "users": [{"name": user, "user": {"token": token}}],
            "contexts": [
                {
                    "name": "budget-guard-test",
                    "context": {"cluster": "budget-guard-test", "user": user},
                }
            ],
            "current-context": "budget-guard-test",
        }
        path.write_text(json.dumps(config, indent=2))
        path.chmod(0o600)
        return path

    def kubectl(
        self, *args: str, kubeconfig: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                str(self.binaries.kubectl),
                f"--kubeconfig={kubeconfig or self.kubeconfig_path}",
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )


def _decode(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")
