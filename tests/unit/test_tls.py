"""Transport encryption settings (GB/T 39725 §10.1 g; §8.3 Table 5 API 2; §11.3.4.5 a): the
certificate a server presents, the local self-signed pair, and when plain HTTP is refused."""

from __future__ import annotations

import ipaddress
import stat
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography import x509

from seqlife import tls
from seqlife.exceptions import ConfigurationError, InsecureTransport
from seqlife.settings import Settings


def test_self_signed_pair_names_this_machine_only_and_is_private(tmp_path: Path) -> None:
    """§10.1 g: local use is encrypted too; the key is 0600 in a 0700 folder."""
    files = tls.self_signed(tmp_path / "tls")
    cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["localhost"]
    assert set(names.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")}
    assert files.self_signed
    for path in (files.cert, files.key):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(files.cert.parent.stat().st_mode) == 0o700
    assert not list(files.cert.parent.glob("*.tmp"))


def test_self_signed_pair_is_kept_then_renewed_near_expiry_or_when_broken(tmp_path: Path) -> None:
    """A client that pinned the certificate keeps working across restarts; a pair about to expire
    or whose halves no longer match is replaced before a server starts."""
    folder = tmp_path / "tls"
    first = tls.self_signed(folder).cert.read_bytes()
    assert tls.self_signed(folder).cert.read_bytes() == first
    later = datetime.now(timezone.utc) + timedelta(days=tls.VALID_DAYS) - tls.RENEW_BEFORE
    renewed = tls.self_signed(folder, now=later).cert.read_bytes()
    assert renewed != first
    (folder / tls.KEY_FILE).write_bytes(tls.self_signed(tmp_path / "other").key.read_bytes())
    assert tls.self_signed(folder).cert.read_bytes() != renewed


def test_configured_pair_is_used_and_must_exist(tmp_path: Path) -> None:
    """SEQLIFE_TLS_CERT / SEQLIFE_TLS_KEY name the controller's certificate; a missing file is a
    typed refusal naming the setting, not a server in clear."""
    made = tls.self_signed(tmp_path / "issued")
    env = {"SEQLIFE_HOME": str(tmp_path / "home"), "SEQLIFE_TLS_CERT": str(made.cert),
           "SEQLIFE_TLS_KEY": str(made.key)}
    files = tls.server_files(Settings.from_env(env))
    assert (files.cert, files.key, files.self_signed) == (made.cert, made.key, False)
    assert not (tmp_path / "home" / tls.TLS_DIR).exists()
    missing = replace(Settings.from_env(env), tls_key=tmp_path / "absent.pem")
    with pytest.raises(ConfigurationError, match="SEQLIFE_TLS_KEY: .*absent.pem is not a readable"):
        tls.server_files(missing)


def test_without_a_configured_pair_the_local_one_is_made_under_home(tmp_path: Path) -> None:
    files = tls.server_files(Settings.from_env({"SEQLIFE_HOME": str(tmp_path)}))
    assert files.cert == tmp_path / "tls" / "cert.pem" and files.self_signed


@pytest.mark.parametrize("env, says", [
    ({"SEQLIFE_TLS_CERT": "/etc/seqlife/cert.pem"}, "go together"),
    ({"SEQLIFE_TLS_KEY": "/etc/seqlife/key.pem"}, "go together"),
    ({"SEQLIFE_PLAIN_HTTP": "1"}, "may only be 'loopback'"),
    ({"SEQLIFE_TRUSTED_PROXIES": "proxy.internal"}, "not an IP address or CIDR"),
])
def test_transport_settings_are_checked_when_read(tmp_path: Path, env: dict, says: str) -> None:
    with pytest.raises(ConfigurationError, match=says):
        Settings.from_env({"SEQLIFE_HOME": str(tmp_path), **env})


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost"])
def test_plain_http_asked_for_on_loopback_is_allowed(host: str) -> None:
    tls.require_tls(host, plain_http=True)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "", "10.2.3.4", "share.hospital.cn"])
def test_plain_http_on_any_other_host_is_refused(host: str) -> None:
    """§10.1 g; §8.3 Table 5 API 2: tokens and rows never cross a network in clear."""
    with pytest.raises(InsecureTransport, match="GB/T 39725 §10.1 g") as refused:
        tls.require_tls(host, plain_http=True)
    assert isinstance(refused.value, ConfigurationError)
    tls.require_tls(host, plain_http=False)
