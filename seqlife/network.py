"""Network addresses: which hosts can only be this machine (loopback), which CIDRs a setting
names, and who a caller is when requests come through proxies (GB/T 39725 §8.3 Table 5 API 3:
the API log names the caller)."""

from __future__ import annotations

import ipaddress
from typing import Iterable

from seqlife.exceptions import ConfigurationError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


def is_loopback(host: str) -> bool:
    """True for a name or address that can only reach this machine (127.0.0.0/8, ::1,
    localhost); anything else may leave it."""
    host = host.strip().strip("[]").rstrip(".").lower()
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False



def parse_networks(text: str, setting: str) -> tuple[Network, ...]:
    """Comma-separated CIDRs (a bare address is a /32 or /128); a typo is refused, not ignored,
    so a proxy list never silently trusts more or less than written."""
    networks = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            networks.append(ipaddress.ip_network(part, strict=False))
        except ValueError as exc:
            raise ConfigurationError(f"{setting}: '{part}' is not an IP address or CIDR "
                                     "(e.g. 10.0.0.0/8, 192.168.1.5).") from exc
    return tuple(networks)


def _address(text: str) -> Address | None:
    try:
        return ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None


def client_address(peer: str | None, forwarded_for: Iterable[str],
                   trusted: tuple[Network, ...]) -> str:
    """The caller to log: the socket peer, unless the peer is a trusted proxy.

    Only then is ``X-Forwarded-For`` read, from the right: each hop a trusted proxy appended is
    skipped and the first untrusted one is the caller, so a client cannot name itself by sending
    the header. A hop that is not an address stops the walk at the last proxy that vouched for
    it, and no header text reaches the log.
    """
    if peer is None:
        return "unknown"
    address = _address(peer)
    if address is None or not any(address in net for net in trusted):
        return peer
    hops = [hop for value in forwarded_for for hop in value.split(",") if hop.strip()]
    for hop in reversed(hops):
        hop_address = _address(hop)
        if hop_address is None:
            return str(address)
        address = hop_address
        if not any(address in net for net in trusted):
            break
    return str(address)
