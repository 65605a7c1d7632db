"""Who called (GB/T 39725 §8.3 Table 5 API 3: the API log names the caller): the socket peer,
unless it is a configured trusted proxy; only then is X-Forwarded-For read, rightmost untrusted
hop first. Loopback detection serves the residency and plain-HTTP rules."""

from __future__ import annotations

import pytest

from seqlife.exceptions import ConfigurationError
from seqlife.network import client_address, is_loopback, parse_networks

PROXIES = parse_networks("10.0.0.0/8, 2001:db8::/32", "SEQLIFE_TRUSTED_PROXIES")


@pytest.mark.parametrize("title, peer, forwarded, trusted, caller", [
    ("no proxies configured: the header is ignored, even from loopback",
     "127.0.0.1", ["203.0.113.9"], (), "127.0.0.1"),
    ("an untrusted peer cannot name itself", "198.51.100.4", ["203.0.113.9"], PROXIES,
     "198.51.100.4"),
    ("a trusted proxy names its client", "10.0.0.2", ["203.0.113.9"], PROXIES, "203.0.113.9"),
    ("a client's forged leftmost hop is skipped: rightmost untrusted wins",
     "10.0.0.2", ["1.2.3.4, 203.0.113.9"], PROXIES, "203.0.113.9"),
    ("chained trusted proxies are walked through", "10.0.0.2",
     ["1.2.3.4, 203.0.113.9, 10.0.0.7"], PROXIES, "203.0.113.9"),
    ("several header lines read as one list", "10.0.0.2", ["1.2.3.4", "203.0.113.9, 10.9.9.9"],
     PROXIES, "203.0.113.9"),
    ("every hop trusted: the farthest one", "10.0.0.2", ["10.1.1.1, 10.0.0.7"], PROXIES,
     "10.1.1.1"),
    ("a trusted proxy without the header is the caller", "10.0.0.2", [], PROXIES, "10.0.0.2"),
    ("a hop that is not an address stops at the proxy that passed it; no header text is logged",
     "10.0.0.2", ["<script>, 10.0.0.7"], PROXIES, "10.0.0.7"),
    ("IPv6 proxies and clients", "2001:db8::1", ["2001:db8:ffff::9, [2400:cb00::1]"], PROXIES,
     "2400:cb00::1"),
    ("no peer known", None, ["203.0.113.9"], PROXIES, "unknown"),
    ("a test transport's non-address peer stays as it is", "testclient", ["203.0.113.9"],
     PROXIES, "testclient"),
])
def test_client_address(title: str, peer: str | None, forwarded: list[str], trusted: tuple,
                        caller: str) -> None:
    assert client_address(peer, forwarded, trusted) == caller, title


def test_parse_networks_refuses_a_typo_with_the_setting_named() -> None:
    with pytest.raises(ConfigurationError, match="SEQLIFE_TRUSTED_PROXIES: '10.0.0/33'"):
        parse_networks("10.0.0.0/8,10.0.0/33", "SEQLIFE_TRUSTED_PROXIES")
    assert parse_networks(" ", "X") == ()


@pytest.mark.parametrize("host, loopback", [
    ("127.0.0.1", True), ("127.8.0.1", True), ("::1", True), ("[::1]", True),
    ("localhost", True), ("LOCALHOST.", True), ("0.0.0.0", False), ("::", False), ("", False),
    ("10.0.0.1", False), ("localhost.example.com", False), ("example.org", False)])
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
