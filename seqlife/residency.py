"""Data residency (GB/T 39725 §7 q): health data and its keys are stored only in the country.

Every place a deployment keeps data or keys -- object store, catalog, KMS, backups -- is a
``Location``. ``check`` refuses each one the residency policy (``residency.yaml``) does not allow,
before anything connects. A host is allowed only by a rule that names it: loopback, a listed host,
or a cloud endpoint whose region is listed. Anything else, an unknown host included, is refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable
from urllib.parse import urlsplit

from seqlife.exceptions import PolicyFileError, ResidencyViolation
from seqlife.network import is_loopback
from seqlife.policy import POLICY_DIR, Policy, load_policy

STAGE = "residency"
REQUIRED_RULES = frozenset({"allowed_regions", "region_endpoints", "allowed_hosts", "loopback",
                            "local_paths"})
#: Schemes whose URL names a file on this machine rather than a host.
LOCAL_SCHEMES = frozenset({"", "file", "sqlite"})


@dataclass(frozen=True)
class Location:
    """One place data or keys are kept, as the adapters will reach it.

    ``url`` is an endpoint, a database URL or a local path; it may carry credentials, so messages
    quote ``what``, ``setting`` and the host only.
    """

    what: str
    setting: str
    url: str


def load_residency_policy(policy_dir: Path = POLICY_DIR) -> Policy:
    """Load ``residency.yaml``; a pattern without ``{region}`` or a value of the wrong kind is
    refused at load time, so a typo cannot open the check."""
    policy = load_policy(STAGE, REQUIRED_RULES, policy_dir)
    for name in ("allowed_regions", "region_endpoints", "allowed_hosts"):
        values = policy[name]
        if not isinstance(values, list) or not all(isinstance(v, str) and v for v in values):
            raise PolicyFileError(f"{policy.source}: rule '{name}' must be a list of names.")
    for pattern in policy["region_endpoints"]:
        if pattern.count("{region}") != 1:
            raise PolicyFileError(f"{policy.source}: region_endpoints pattern '{pattern}' must "
                                  "contain {region} exactly once.")
    for name in ("loopback", "local_paths"):
        if not isinstance(policy[name], bool):
            raise PolicyFileError(f"{policy.source}: rule '{name}' must be true or false.")
    return policy


def endpoint_regions(host: str, policy: Policy) -> list[str]:
    """The regions ``host`` names through the policy's endpoint patterns (none for other hosts)."""
    regions = []
    for pattern in policy["region_endpoints"]:
        before, after = pattern.lower().split("{region}")
        match = re.fullmatch(re.escape(before) + r"([a-z0-9-]+)" + re.escape(after), host)
        if match:
            regions.append(match.group(1))
    return regions


def refusal(location: Location, policy: Policy) -> str | None:
    """Why the policy does not allow ``location``, or None when a rule allows it."""
    try:
        parts = urlsplit(location.url)
        host = (parts.hostname or "").rstrip(".")
    except ValueError:
        return "not a URL or path this check can read"
    if parts.scheme.split("+")[0] in LOCAL_SCHEMES:
        return None if policy["local_paths"] else "local paths are not allowed by the policy"
    if not host:
        return "names no host; give the host explicitly so where it stands can be checked"
    if is_loopback(host):
        return None if policy["loopback"] else f"loopback host {host} is not allowed by the policy"
    if host in {h.lower() for h in policy["allowed_hosts"]}:
        return None
    regions = endpoint_regions(host, policy)
    if set(regions) & set(policy["allowed_regions"]):
        return None
    if regions:
        return (f"host {host} is in region {regions[0]}, which is not one of the allowed "
                f"regions ({', '.join(policy['allowed_regions'])})")
    return f"host {host} is not a known in-country host"


def check(locations: Iterable[Location], policy: Policy) -> None:
    """Refuse, naming every offending location at once, unless all of them stay in the country."""
    refusals = [(loc.what, loc.setting, why) for loc in locations
                if (why := refusal(loc, policy)) is not None]
    if refusals:
        raise ResidencyViolation(refusals, policy.clause("allowed_regions"))
