"""Role-based access: which role may run which command (GB/T 39725 §9.2, §11.1.2.4).

Permissions are data (``access.yaml``): a role may run an action (``command`` or
``command.action``) when one of its patterns matches it (``destroy.*``). The policy itself is
checked at load time: roles whose duties must stay separated share no permission.
"""

from __future__ import annotations

from fnmatch import fnmatchcase

from seqlife.exceptions import PolicyFileError, PolicyViolation
from seqlife.policy import Policy, load_policy

REQUIRED_RULES = frozenset({"permissions", "separated_duties"})


def load_access_policy() -> Policy:
    policy = load_policy("access", REQUIRED_RULES)
    for first, second in policy["separated_duties"]:
        overlap = set(policy["permissions"].get(first, ())) & \
            set(policy["permissions"].get(second, ()))
        if overlap:
            raise PolicyFileError(f"{policy.source}: roles {first} and {second} must stay "
                                  f"separated but share {sorted(overlap)} "
                                  f"({policy.clause('separated_duties')}).")
    return policy


def allowed(role: str, action: str, policy: Policy) -> bool:
    return any(fnmatchcase(action, pattern) for pattern in policy["permissions"].get(role, ()))


def require(role: str, action: str, policy: Policy) -> None:
    """Refuse ``action`` for ``role`` with the clause, before anything is done."""
    if not allowed(role, action, policy):
        raise PolicyViolation(f"The role '{role}' may not run '{action}' "
                              f"({policy.clause('permissions')}); ask a user with a role that "
                              "may, or have your role changed in writing.")
