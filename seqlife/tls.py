"""TLS for every server seqlife runs (GB/T 39725 §10.1 g; §8.3 Table 5 API 2; §11.3.4.5 a).

Patient rows and bearer tokens cross the network only encrypted. A server presents the
certificate named by ``SEQLIFE_TLS_CERT``/``SEQLIFE_TLS_KEY``; without one, a self-signed pair for
localhost is made (and kept, 0600) under ``$SEQLIFE_HOME/tls`` so local use is encrypted too.
Plain HTTP is a test aid only: asked for by name and refused on any host but loopback.

The pair is ECDSA P-256: the SM2 suites of GB/T 38636 (TLCP) are not offered by the OpenSSL TLS
stack Python serves with, so national-suite transport stays with a TLCP gateway in front.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from seqlife.exceptions import ConfigurationError, InsecureTransport
from seqlife.network import is_loopback
from seqlife.settings import Settings

TLS_DIR = "tls"
CERT_FILE = "cert.pem"
KEY_FILE = "key.pem"
#: Names the self-signed certificate is valid for: this machine only.
LOCAL_NAMES = ("localhost", "127.0.0.1", "::1")
VALID_DAYS = 365
#: A self-signed certificate this close to expiry is replaced before a server starts.
RENEW_BEFORE = timedelta(days=30)
CLAUSE = "GB/T 39725 §10.1 g; §8.3 Table 5 API 2"


@dataclass(frozen=True)
class TlsFiles:
    """The PEM files a server loads; ``self_signed`` says a client must pin ``cert``."""

    cert: Path
    key: Path
    self_signed: bool


def require_tls(host: str, plain_http: bool) -> None:
    """Refuse to serve without TLS unless plain HTTP was asked for and the host is loopback: a
    bearer token or a patient row sent in clear on a network is readable by anyone on the path."""
    if plain_http and not is_loopback(host):
        raise InsecureTransport(
            f"Plain HTTP was asked for (SEQLIFE_PLAIN_HTTP=loopback) but the server would listen "
            f"on {host or 'every interface'}, which other machines reach; data and tokens cross "
            f"a network only over TLS ({CLAUSE}). Unset SEQLIFE_PLAIN_HTTP, or listen on "
            "127.0.0.1.", host=host)


def server_files(settings: Settings, now: datetime | None = None) -> TlsFiles:
    """The configured certificate and key, or the self-signed pair for local use."""
    if settings.tls_cert is not None and settings.tls_key is not None:
        for setting, path in (("SEQLIFE_TLS_CERT", settings.tls_cert),
                              ("SEQLIFE_TLS_KEY", settings.tls_key)):
            if not path.is_file():
                raise ConfigurationError(f"{setting}: {path} is not a readable file; servers "
                                         f"answer only over TLS ({CLAUSE}).")
        return TlsFiles(settings.tls_cert, settings.tls_key, self_signed=False)
    return self_signed(settings.home / TLS_DIR, now)


def self_signed(directory: Path, now: datetime | None = None) -> TlsFiles:
    """Keep one self-signed pair for ``LOCAL_NAMES`` in ``directory`` (0700, files 0600); make
    a new one when it is missing, unreadable, for other names or near expiry."""
    now = now or datetime.now(timezone.utc)
    files = TlsFiles(directory / CERT_FILE, directory / KEY_FILE, self_signed=True)
    if _still_good(files, now):
        return files
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "seqlife local server")])
    cert = (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=VALID_DAYS))
            .add_extension(x509.SubjectAlternativeName(_names(LOCAL_NAMES)), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    _write_private(files.key, key.private_bytes(serialization.Encoding.PEM,
                                                serialization.PrivateFormat.PKCS8,
                                                serialization.NoEncryption()))
    _write_private(files.cert, cert.public_bytes(serialization.Encoding.PEM))
    return files


def _names(names: tuple[str, ...]) -> list[x509.GeneralName]:
    entries: list[x509.GeneralName] = []
    for name in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return entries


def _still_good(files: TlsFiles, now: datetime) -> bool:
    """The kept pair is reused only if it matches, names this machine and is not near expiry."""
    try:
        cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
        key = serialization.load_pem_private_key(files.key.read_bytes(), password=None)
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (OSError, ValueError, TypeError, x509.ExtensionNotFound):
        return False
    return (cert.public_key() == key.public_key()
            and cert.not_valid_after_utc - now > RENEW_BEFORE
            and set(names) == set(_names(LOCAL_NAMES)))


def _write_private(path: Path, data: bytes) -> None:
    """Write 0600 from the first byte (never briefly readable by others), then replace."""
    temporary = path.with_name(path.name + ".tmp")
    temporary.unlink(missing_ok=True)
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)
    os.replace(temporary, path)
