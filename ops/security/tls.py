"""Local certificate authority for the MQTT broker's TLS listeners, made with ``openssl``.

One CA per stack (``<secrets>/tls/ca.key``, never given to the broker), one server certificate for
``localhost``/``127.0.0.1``, and client certificates whose subject CN is a device's MAC (the
broker's mTLS listener takes the CN as the MQTT username). Keys are ECDSA P-256, private files are
mode 0600. Every function is idempotent: it creates only what is missing.

Revocation: a revoked client certificate's serial goes into the CA's certificate revocation list
(``crl.pem``, kept with ``openssl ca``'s database ``crl-index.txt``); the broker's mTLS listener
checks new handshakes against it (``crlfile``) and re-reads it on SIGHUP (verified on Mosquitto
2.0.11: a revoked certificate fails the handshake after the reload, other connections stay). A
new certificate for the same MAC has a new serial, so registering a device again never revives
its old certificate.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import msgspec

CA_DAYS = 3650
LEAF_DAYS = 825
CURVE = "ec_paramgen_curve:P-256"
SERVER_NAMES = "DNS:localhost,IP:127.0.0.1,IP:::1"


class TlsError(RuntimeError):
    """openssl failed; the message carries its output."""


class CertFiles(msgspec.Struct, frozen=True):
    """A certificate, its private key and the CA that signed it."""

    ca_file: str
    cert_file: str
    key_file: str


def _openssl(*args: str) -> None:
    """Run openssl; files it creates are private (``openssl ca`` writes its database files)."""
    old = os.umask(0o077)
    try:
        result = subprocess.run(["openssl", *args], capture_output=True, text=True)
    finally:
        os.umask(old)
    if result.returncode != 0:
        raise TlsError(f"openssl {args[0]} failed: {result.stderr.strip()[-500:]}")


def _new_key(path: Path) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    old = os.umask(0o077)
    try:
        _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", CURVE, "-out", str(path))
    finally:
        os.umask(old)
    os.chmod(path, 0o600)


def ensure_ca(tls_dir: Path) -> tuple[Path, Path]:
    """The CA's certificate and key in ``tls_dir``, created if missing."""
    cert, key = tls_dir / "ca.crt", tls_dir / "ca.key"
    if cert.exists() and key.exists():
        return cert, key
    _new_key(key)
    _openssl(
        "req", "-x509", "-new", "-key", str(key), "-sha256", "-days", str(CA_DAYS),
        "-subj", "/O=F2 pipeline/CN=F2 local CA", "-out", str(cert),
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    return cert, key


def _sign(tls_dir: Path, cert: Path, key: Path, subject: str, extensions: str) -> CertFiles:
    """A key and a certificate at ``cert``/``key`` signed by the CA, created if missing."""
    ca_cert, ca_key = ensure_ca(tls_dir)
    if not (cert.exists() and key.exists()):
        _new_key(key)
        with tempfile.TemporaryDirectory() as scratch:
            csr, ext = Path(scratch) / "req.csr", Path(scratch) / "ext.cnf"
            ext.write_text(extensions)
            _openssl("req", "-new", "-key", str(key), "-subj", subject, "-out", str(csr))
            _openssl(
                "x509", "-req", "-in", str(csr), "-CA", str(ca_cert), "-CAkey", str(ca_key),
                "-CAcreateserial", "-CAserial", str(tls_dir / "ca.srl"),
                "-days", str(LEAF_DAYS), "-sha256", "-extfile", str(ext), "-out", str(cert),
            )  # fmt: skip
    return CertFiles(ca_file=str(ca_cert), cert_file=str(cert), key_file=str(key))


def ensure_server_cert(tls_dir: Path) -> CertFiles:
    """The broker's server certificate (``localhost``, ``127.0.0.1``, ``::1``)."""
    return _sign(
        tls_dir,
        tls_dir / "server.crt",
        tls_dir / "server.key",
        "/O=F2 pipeline/CN=localhost",
        f"subjectAltName={SERVER_NAMES}\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n",
    )


def ensure_client_cert(tls_dir: Path, device_dir: Path, mac: str) -> CertFiles:
    """A client certificate for one device, CN = its MAC, kept in ``device_dir``."""
    return _sign(
        tls_dir,
        device_dir / "client.crt",
        device_dir / "client.key",
        f"/O=F2 pipeline/CN={mac}",
        "extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n",
    )


def certificate_subject(cert: Path) -> str:
    """The subject line of a certificate as openssl prints it (for checks and listings)."""
    result = subprocess.run(
        ["openssl", "x509", "-noout", "-subject", "-in", str(cert)],
        capture_output=True,
        text=True,
        check=False,
    )
    return result.stdout.strip()


CRL_DAYS = 3650
_CA_CONFIG = """\
[ ca ]
default_ca = f2
[ f2 ]
database = {index}
crlnumber = {number}
default_md = sha256
default_crl_days = {days}
"""


def _ca_config(tls_dir: Path) -> Path:
    """A minimal ``openssl ca`` configuration whose database holds the revoked serials."""
    index, number = tls_dir / "crl-index.txt", tls_dir / "crl-number"
    config = tls_dir / "crl.cnf"
    old = os.umask(0o077)
    try:
        if not index.exists():
            index.write_text("")
        if not number.exists():
            number.write_text("01\n")
        config.write_text(_CA_CONFIG.format(index=index, number=number, days=CRL_DAYS))
    finally:
        os.umask(old)
    for path in tls_dir.glob("crl*"):
        if path.suffix != ".pem":
            os.chmod(path, 0o600)
    return config


def ensure_crl(tls_dir: Path) -> Path:
    """The CA's certificate revocation list (``crl.pem``), created (empty) if missing."""
    crl = tls_dir / "crl.pem"
    if not crl.exists():
        _write_crl(tls_dir)
    return crl


def _write_crl(tls_dir: Path) -> None:
    ca_cert, ca_key = ensure_ca(tls_dir)
    _openssl(
        "ca", "-gencrl", "-config", str(_ca_config(tls_dir)), "-cert", str(ca_cert),
        "-keyfile", str(ca_key), "-out", str(tls_dir / "crl.pem"),
    )  # fmt: skip


def revoke_certificate(tls_dir: Path, cert: Path) -> Path:
    """Add ``cert``'s serial to the revocation list and write the list again; its path."""
    ca_cert, ca_key = ensure_ca(tls_dir)
    serial = certificate_serial(cert)
    if serial not in revoked_serials(tls_dir):
        _openssl(
            "ca", "-revoke", str(cert), "-config", str(_ca_config(tls_dir)),
            "-cert", str(ca_cert), "-keyfile", str(ca_key),
        )  # fmt: skip
    _write_crl(tls_dir)
    return tls_dir / "crl.pem"


def certificate_serial(cert: Path) -> str:
    """The serial number of a certificate, upper-case hex as ``openssl ca`` records it."""
    result = subprocess.run(
        ["openssl", "x509", "-noout", "-serial", "-in", str(cert)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise TlsError(f"openssl x509 -serial failed: {result.stderr.strip()[-300:]}")
    return result.stdout.strip().partition("=")[2].upper()


def revoked_serials(tls_dir: Path) -> set[str]:
    """The serials the revocation list holds (from ``openssl ca``'s database)."""
    try:
        lines = (tls_dir / "crl-index.txt").read_text().splitlines()
    except FileNotFoundError:
        return set()
    return {line.split("\t")[3].upper() for line in lines if line.startswith("R\t")}
