"""The sharing API answers only over TLS (GB/T 39725 §10.1 g; §8.3 Table 5 API 2; §11.3.4.5 a)
and logs the socket peer as the caller unless a trusted proxy names it (§8.3 Table 5 API 3): a
real uvicorn server on a free loopback port, reached with httpx pinned to the generated
certificate."""

from __future__ import annotations

import ipaddress
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Iterator

import httpx
import pytest
import uvicorn
from conftest import free_port
from sqlalchemy import select

from infra.catalog import ApiCall
from infra.https import server_config
from infra.resources import Resources, build_resources
from infra.share_api import create_app
from seqlife.exceptions import InsecureTransport
from seqlife.settings import Settings

#: The transport does not depend on the catalog backend; the embedded one is enough.
embedded = pytest.mark.parametrize("backend", ["embedded"], indirect=True)


@contextmanager
def serving(resources: Resources, host: str = "127.0.0.1") -> Iterator[tuple[int, str | None]]:
    """The API with the configuration `share serve` uses, in a thread; yields (port, cert)."""
    config = server_config(create_app(resources), resources.settings, host, 0, log_level="error")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        yield server.servers[0].sockets[0].getsockname()[1], config.ssl_certfile
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def pinned(cert: str) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=cert)


def with_settings(resources: Resources, **changes) -> Resources:
    return Resources(**{**resources.__dict__, "settings": replace(resources.settings, **changes)})


def callers(resources: Resources) -> list[str]:
    with resources.sessions() as session:
        return list(session.scalars(select(ApiCall.caller).order_by(ApiCall.id)))


@embedded
def test_the_api_answers_over_tls_verified_against_the_generated_certificate(
        resources: Resources) -> None:
    """§10.1 g, §11.3.4.5 a: with no certificate configured, a self-signed pair for localhost
    is made under $SEQLIFE_HOME/tls (0600) and the server presents it, for its IP and name."""
    with serving(resources) as (port, cert):
        assert cert == str(resources.settings.home / "tls" / "cert.pem")
        assert oct(os.stat(resources.settings.home / "tls" / "key.pem").st_mode & 0o777) == "0o600"
        for host in ("127.0.0.1", "localhost"):
            answer = httpx.get(f"https://{host}:{port}/v1/health", verify=pinned(cert))
            assert answer.json() == {"status": "ok"}
        with socket.create_connection(("127.0.0.1", port)) as raw, \
                pinned(cert).wrap_socket(raw, server_hostname="127.0.0.1") as channel:
            assert channel.version() in ("TLSv1.2", "TLSv1.3")


@embedded
def test_plain_http_and_unpinned_clients_get_nothing(resources: Resources) -> None:
    """§8.3 Table 5 API 2: the port does not speak plain HTTP, and a client that does not trust
    the certificate refuses the handshake (no token or row is sent)."""
    with serving(resources) as (port, _):
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{port}/v1/extract",
                      headers={"Authorization": "Bearer not-sent-in-clear"})
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.get(f"https://127.0.0.1:{port}/v1/health")
    assert callers(resources) == []


@embedded
def test_a_configured_certificate_is_the_one_presented(resources: Resources,
                                                       tmp_path: Path) -> None:
    """SEQLIFE_TLS_CERT / SEQLIFE_TLS_KEY: the controller's pair replaces the local one."""
    from seqlife import tls

    issued = tls.self_signed(tmp_path / "issued")
    configured = with_settings(resources, tls_cert=issued.cert, tls_key=issued.key)
    with serving(configured) as (port, cert):
        assert cert == str(issued.cert)
        assert httpx.get(f"https://127.0.0.1:{port}/v1/health",
                         verify=pinned(str(issued.cert))).status_code == 200


@embedded
def test_without_tls_a_non_loopback_server_is_refused(resources: Resources) -> None:
    """§10.1 g: plain HTTP exists only as a loopback test aid; any other host is refused
    before a socket is opened."""
    plain = with_settings(resources, plain_http=True)
    for host in ("0.0.0.0", "::"):
        with pytest.raises(InsecureTransport, match="GB/T 39725 §10.1 g"):
            server_config(create_app(plain), plain.settings, host, 0)
    with serving(plain) as (port, cert):
        assert cert is None
        assert httpx.get(f"http://127.0.0.1:{port}/v1/health").status_code == 200


@embedded
def test_a_local_client_cannot_name_itself_with_x_forwarded_for(resources: Resources) -> None:
    """§8.3 Table 5 API 3: with no trusted proxy configured the caller logged is the socket
    peer, whatever X-Forwarded-For says (uvicorn's own loopback trust is off)."""
    with serving(resources) as (port, cert):
        httpx.get(f"https://127.0.0.1:{port}/v1/extract", verify=pinned(cert),
                  headers={"X-Forwarded-For": "203.0.113.9"})
    assert callers(resources) == ["127.0.0.1"]


@embedded
def test_behind_a_trusted_proxy_the_rightmost_untrusted_hop_is_the_caller(
        resources: Resources) -> None:
    """§8.3 Table 5 API 3: SEQLIFE_TRUSTED_PROXIES lets the proxy (here the loopback peer) name
    its client; a hop the client forged on the left is not believed."""
    trusted = with_settings(resources, trusted_proxies=(ipaddress.ip_network("127.0.0.1/32"),))
    with serving(trusted) as (port, cert):
        httpx.get(f"https://127.0.0.1:{port}/v1/extract", verify=pinned(cert),
                  headers={"X-Forwarded-For": "198.51.100.77, 203.0.113.9"})
    assert callers(resources) == ["203.0.113.9"]


def test_share_serve_refuses_plain_http_on_a_network_interface(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    """The command itself: `share serve --host 0.0.0.0` with plain HTTP asked for exits 1 with
    the clause and never listens."""
    from seqlife.cli import main

    monkeypatch.setenv("SEQLIFE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SEQLIFE_PLAIN_HTTP", "loopback")
    port = free_port()
    try:
        assert main(["share", "serve", "--host", "0.0.0.0", "--port", str(port)]) == 1
    finally:
        build_resources.cache_clear()
    said = " ".join(capsys.readouterr().err.split())
    assert "InsecureTransport" in said and "GB/T 39725 §10.1 g" in said
    with socket.socket() as probe:
        probe.bind(("0.0.0.0", port))  # nobody took the port


def test_share_serve_answers_over_tls(tmp_path: Path) -> None:
    """The command itself serves HTTPS with the self-signed pair it names on start-up."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SEQLIFE_", "PREFECT_"))}
    env["SEQLIFE_HOME"] = str(tmp_path / "home")
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "seqlife.cli", "share", "serve", "--port",
                                str(port)], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    cert = Settings.from_env(env).home / "tls" / "cert.pem"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                answer = httpx.get(f"https://127.0.0.1:{port}/v1/health",
                                   verify=pinned(str(cert)))
                break
            except (httpx.TransportError, FileNotFoundError, ssl.SSLError):
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"share serve did not answer: {process.communicate()[0][-2000:]}")
                time.sleep(0.2)
        assert answer.json() == {"status": "ok"}
    finally:
        process.terminate()
        output = process.communicate(timeout=20)[0]
    flat = " ".join(output.split())
    assert f"https://127.0.0.1:{port}/v1/extract" in flat and "Self-signed certificate" in flat
