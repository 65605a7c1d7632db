"""Serving an ASGI application the one way seqlife serves: uvicorn over TLS.

Every network surface (the sharing API now, the web server later) gets its uvicorn configuration
here, so none can start in clear by accident (GB/T 39725 §10.1 g; §8.3 Table 5 API 2). uvicorn's
own proxy-header handling is off: it trusts ``X-Forwarded-For`` from any loopback client, and the
caller logged must be the socket peer unless ``SEQLIFE_TRUSTED_PROXIES`` says otherwise
(``seqlife.network.client_address``).
"""

from __future__ import annotations

import ssl
from typing import Any, Callable

import uvicorn

from seqlife import tls
from seqlife.exceptions import ConfigurationError
from seqlife.settings import Settings

#: TLS 1.2 suites with forward secrecy and AEAD only (TLS 1.3 suites are all of that kind).
CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"


def _tls_1_2_or_later(config: uvicorn.Config, default: Callable[[], ssl.SSLContext]
                      ) -> ssl.SSLContext:
    context = default()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def _check_pair(files: tls.TlsFiles) -> None:
    """Load the pair once before serving, so a wrong file is a typed refusal naming the setting
    rather than an OpenSSL traceback at start-up; no key material is quoted."""
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(files.cert, files.key)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigurationError(
            f"The TLS certificate {files.cert.name} and key {files.key.name} cannot be loaded "
            f"together ({type(exc).__name__}); check SEQLIFE_TLS_CERT and SEQLIFE_TLS_KEY "
            f"({tls.CLAUSE}).") from exc


def server_config(app: Any, settings: Settings, host: str, port: int,
                  log_level: str = "warning") -> uvicorn.Config:
    """The uvicorn configuration of a seqlife server: TLS with the settings' pair (or the local
    self-signed one), plain HTTP only when asked for on loopback."""
    tls.require_tls(host, settings.plain_http)
    options: dict[str, Any] = {}
    if not settings.plain_http:
        files = tls.server_files(settings)
        _check_pair(files)
        options = {"ssl_certfile": str(files.cert), "ssl_keyfile": str(files.key),
                   "ssl_ciphers": CIPHERS, "ssl_context_factory": _tls_1_2_or_later}
    return uvicorn.Config(app, host=host, port=port, log_level=log_level, proxy_headers=False,
                          server_header=False, **options)
