"""Certificates and keys for the local control plane, made with the openssl CLI."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

DAYS = "3650"


def _openssl(*args: str, cwd: Path) -> None:
    result = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args[:2])} failed in {cwd}: {result.stderr.strip()}")


def _issue(pki: Path, name: str, subject: str, extensions: str) -> None:
    """A key and a certificate signed by the local CA."""
    (pki / f"{name}.ext").write_text(extensions)
    _openssl("genrsa", "-out", f"{name}.key", "2048", cwd=pki)
    _openssl("req", "-new", "-key", f"{name}.key", "-subj", subject, "-out", f"{name}.csr", cwd=pki)
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", DAYS, "-sha256", "-extfile", f"{name}.ext",
        "-out", f"{name}.crt",
        cwd=pki,
    )  # fmt: skip


def ensure_pki(pki: Path) -> None:
    """CA, API server serving cert, admin client cert (system:masters), service-account key."""
    if (pki / "admin.crt").exists():
        return
    if shutil.which("openssl") is None:
        raise RuntimeError("openssl is missing: install it with `apt-get install -y openssl`")
    pki.mkdir(parents=True, exist_ok=True)
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
        "-days", DAYS, "-subj", "/CN=collectjob-local-ca",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=pki,
    )  # fmt: skip
    _issue(
        pki,
        "apiserver",
        "/CN=kube-apiserver",
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,"
        "DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc\n",
    )
    _issue(
        pki,
        "admin",
        "/O=system:masters/CN=admin",
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=clientAuth\n",
    )
    _openssl("genrsa", "-out", "sa.key", "2048", cwd=pki)
    _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=pki)
