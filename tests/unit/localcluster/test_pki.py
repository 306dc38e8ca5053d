"""The local PKI: one CA, serving and client certificates for the right uses, no leftovers."""

from __future__ import annotations

import ipaddress
import stat
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from localcluster.pki import ensure_pki


def _cert(pki: Path, name: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate((pki / f"{name}.crt").read_bytes())


def test_every_certificate_is_signed_by_the_ca_for_its_use(tmp_path: Path) -> None:
    ensure_pki(tmp_path)
    ca = _cert(tmp_path, "ca")
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    uses = {
        "apiserver": ExtendedKeyUsageOID.SERVER_AUTH,
        "etcd-server": ExtendedKeyUsageOID.SERVER_AUTH,
        "admin": ExtendedKeyUsageOID.CLIENT_AUTH,
        "apiserver-etcd-client": ExtendedKeyUsageOID.CLIENT_AUTH,
    }
    for name, usage in uses.items():
        cert = _cert(tmp_path, name)
        cert.verify_directly_issued_by(ca)
        assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [usage]
    admin = _cert(tmp_path, "admin").subject
    assert admin.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "system:masters"
    names = _cert(tmp_path, "apiserver").extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    )
    assert ipaddress.ip_address("127.0.0.1") in names.value.get_values_for_type(x509.IPAddress)
    assert "kubernetes.default.svc" in names.value.get_values_for_type(x509.DNSName)


def test_keys_are_private_and_nothing_else_is_left(tmp_path: Path) -> None:
    ensure_pki(tmp_path)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted(
        [
            *(
                f"{n}.{ext}"
                for n in ("ca", "apiserver", "admin", "etcd-server", "apiserver-etcd-client")
                for ext in ("crt", "key")
            ),
            "sa.key",
            "sa.pub",
        ]
    )
    for key in tmp_path.glob("*.key"):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key


def test_an_existing_pki_is_kept(tmp_path: Path) -> None:
    ensure_pki(tmp_path)
    before = (tmp_path / "ca.crt").read_bytes()
    ensure_pki(tmp_path)
    assert (tmp_path / "ca.crt").read_bytes() == before
