"""Roles (GB/T 39725 §9.2, §11.1.2.4; App. C art. 15): least privilege, separated duties."""

from __future__ import annotations

import pytest

from seqlife import access
from seqlife.cli import action_of, build_parser
from seqlife.exceptions import PolicyFileError, PolicyViolation
from seqlife.policy import Policy, Rule

POLICY = access.load_access_policy()


@pytest.mark.parametrize("role, argv, ok", [
    ("operator", ["collect", "d", "--dataset", "x"], True),
    ("operator", ["keys", "shred", "d", "--reason", "r"], False),
    ("operator", ["deidentify", "reidentify", "S-x", "--project", "p", "--reason", "r"], False),
    ("reidentification_officer", ["deidentify", "reidentify", "S-x", "--project", "p"], True),
    ("steward", ["classify", "approve", "d"], True),
    ("requester", ["share", "request", "r.yaml"], True),
    ("requester", ["share", "vote", "req-1", "--reviewer", "rev-01"], False),
    ("committee", ["share", "vote", "req-1", "--reviewer", "rev-01"], True),
    ("auditor", ["audit", "log"], True),
    ("auditor", ["decrypt", "f", "--out", "o", "--dataset", "d"], False),
    ("operator", ["decrypt", "f", "--out", "o", "--key", "k.sec"], True),
    ("operator", ["decrypt", "f", "--out", "o", "--dataset", "d"], False),
    ("steward", ["decrypt", "f", "--out", "o", "--dataset", "d"], True),
    ("operator", ["collect", "dir", "--dataset", "d"], True),
    ("operator", ["collect", "dir", "--dataset", "d", "--accept-map"], False),
    ("operator", ["collect", "dir", "--dataset", "d", "--map", "m.yaml"], False),
    ("steward", ["collect", "dir", "--dataset", "d", "--map", "m.yaml"], True),
    ("security_admin", ["keys", "rotate"], True),
    ("security_admin", ["audit", "log"], False),
    ("nobody", ["datasets"], False),
])
def test_every_command_is_checked_against_the_role(role, argv, ok) -> None:
    """§11.1.2.4: the role's permissions decide, before anything runs."""
    action = action_of(build_parser().parse_args(argv))
    if ok:
        access.require(role, action, POLICY)
    else:
        with pytest.raises(PolicyViolation, match="§11.1.2.4"):
            access.require(role, action, POLICY)


def test_admin_and_audit_duties_may_not_overlap(monkeypatch) -> None:
    """§9.2: a policy giving the security administrator the audit trail is refused at load."""
    rules = dict(POLICY.rules)
    permissions = {**POLICY["permissions"], "security_admin": ["keys.*", "audit.log"],
                   "auditor": ["audit.log"]}
    rules["permissions"] = Rule(permissions, POLICY.clause("permissions"))
    broken = Policy(POLICY.stage, POLICY.version, rules, POLICY.content_hash, POLICY.source)
    monkeypatch.setattr(access, "load_policy", lambda *_: broken)
    with pytest.raises(PolicyFileError, match="separated"):
        access.load_access_policy()
