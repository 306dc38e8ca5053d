"""Certificates and keys for the local control plane, made with `cryptography` in-process.

One CA signs everything: the API server's and etcd's serving certificates, the admin's
client certificate (system:masters) and the API server's client certificate for etcd
(etcd accepts only clients with a certificate from this CA). The service-account signing
key is separate. Keys are ECDSA P-256, written 0600; nothing else is left in the directory.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALID_DAYS = 3650
LOOPBACK_NAMES = ("localhost",)
LOOPBACK_IPS = ("127.0.0.1",)
KUBERNETES_NAMES = ("kubernetes", "kubernetes.default", "kubernetes.default.svc")
# The first address of the service range: the `kubernetes` Service's ClusterIP.
KUBERNETES_SERVICE_IP = "10.0.0.1"


@dataclass(frozen=True)
class Leaf:
    """A certificate the CA issues: file name, subject, usage and names."""

    name: str
    common_name: str
    organization: str = ""
    server: bool = False
    dns: Sequence[str] = ()
    ips: Sequence[str] = ()


LEAVES = (
    Leaf(
        "apiserver",
        "kube-apiserver",
        server=True,
        dns=(*LOOPBACK_NAMES, *KUBERNETES_NAMES),
        ips=(*LOOPBACK_IPS, KUBERNETES_SERVICE_IP),
    ),
    Leaf("admin", "admin", organization="system:masters"),
    Leaf("etcd-server", "etcd", server=True, dns=LOOPBACK_NAMES, ips=LOOPBACK_IPS),
    Leaf("apiserver-etcd-client", "kube-apiserver-etcd-client"),
)


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str, organization: str = "") -> x509.Name:
    parts = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization)] if organization else []
    return x509.Name([*parts, x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _builder(subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey):
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
    )


def make_ca() -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = _key()
    name = _name("collectjob-local-ca")
    cert = (
        _builder(name, name, key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return key, cert


def issue(
    leaf: Leaf, ca_key: ec.EllipticCurvePrivateKey, ca: x509.Certificate
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = _key()
    usage = ExtendedKeyUsageOID.SERVER_AUTH if leaf.server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        _builder(_name(leaf.common_name, leaf.organization), ca.subject, key.public_key())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, True, False, False, False, False, False, False),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    )
    names: list[x509.GeneralName] = [x509.DNSName(d) for d in leaf.dns]
    names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in leaf.ips]
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return key, builder.sign(ca_key, hashes.SHA256())


def ensure_pki(pki: Path) -> None:
    """CA, serving and client certificates, the service-account key; kept if all exist."""
    wanted = ["ca.crt", "sa.key", "sa.pub", *(f"{leaf.name}.crt" for leaf in LEAVES)]
    if all((pki / name).exists() for name in wanted):
        return
    pki.mkdir(parents=True, exist_ok=True)
    ca_key, ca = make_ca()
    _write_key(pki / "ca.key", ca_key)
    _write_cert(pki / "ca.crt", ca)
    for leaf in LEAVES:
        key, cert = issue(leaf, ca_key, ca)
        _write_key(pki / f"{leaf.name}.key", key)
        _write_cert(pki / f"{leaf.name}.crt", cert)
    sa_key = _key()
    _write_key(pki / "sa.key", sa_key)
    (pki / "sa.pub").write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
