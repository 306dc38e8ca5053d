"""Real user identities on the local cluster: client certificates signed by its CA.

A tenant in the issue's sense is a person the API server authenticates as a user, not an
admin impersonating one: the certificate's CN is the user name, and every request the test
makes as that user goes through the same authentication, RBAC and admission as a real one.
"""

from __future__ import annotations

import datetime
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from localcluster.client import Cluster


@dataclass(frozen=True)
class User:
    """kubectl as one user of the local cluster, through its own kubeconfig."""

    name: str
    cluster: Cluster
    kubeconfig: Path

    def kubectl(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        argv = [str(self.cluster.kubectl_path), f"--kubeconfig={self.kubeconfig}", *args]
        return subprocess.run(argv, capture_output=True, text=True, input=input, timeout=60)

    def apply(self, manifest: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        return self.kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest))

    def whoami(self) -> str:
        out = self.kubectl("auth", "whoami", "-o", "json").stdout
        return str(json.loads(out)["status"]["userInfo"]["username"])


def issue_user(cluster: Cluster, name: str, directory: Path) -> User:
    """A client certificate for `name` (no groups) signed by the local CA, and a kubeconfig
    that uses it against the local API server only."""
    pki = cluster.paths.pki
    ca_cert = x509.load_pem_x509_certificate((pki / "ca.crt").read_bytes())
    ca_key = serialization.load_pem_private_key((pki / "ca.key").read_bytes(), password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=2))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    kubeconfig = directory / f"{name}.kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {
                        "name": "local",
                        "cluster": {
                            "server": cluster.server,
                            "certificate-authority": str(pki / "ca.crt"),
                        },
                    }
                ],
                "users": [
                    {
                        "name": name,
                        "user": {"client-certificate": str(cert_path), "client-key": str(key_path)},
                    }
                ],
                "contexts": [{"name": name, "context": {"cluster": "local", "user": name}}],
                "current-context": name,
            }
        )
    )
    return User(name, cluster, kubeconfig)


def grant(
    cluster: Cluster, namespace: str, user: str, rules: list[dict[str, Any]], name: str
) -> None:
    """A Role with `rules` in `namespace`, bound to `user` (applied as the admin)."""
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": name, "namespace": namespace},
        "rules": rules,
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": name, "namespace": namespace},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
    }
    docs = yaml.safe_dump_all([role, binding])
    cluster.kubectl("apply", "-f", "-", input=docs)
