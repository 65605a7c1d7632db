"""Policies are data: versioned YAML under ``data_catalog/policies/``, each rule next to its clause.

A policy file looks like::

    version: 1
    stage: collect
    rules:
      on_withdrawn: {value: exclude, clause: "RARE §4.9", note: "..."}

Loading checks that exactly the rules a stage needs are present (a typo raises at load time with the
file and key named) and computes a content hash that is stamped on audit records and certificates.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml

from seqlife.exceptions import PolicyFileError

DATA_CATALOG = Path(__file__).resolve().parents[1] / "data_catalog"
POLICY_DIR = DATA_CATALOG / "policies"


@dataclass(frozen=True)
class Rule:
    """One policy value with the clause of the standard it comes from."""

    value: Any
    clause: str
    note: str = ""


@dataclass(frozen=True)
class Policy:
    """A stage's rules, the file's version and the hash of its content."""

    stage: str
    version: int
    rules: Mapping[str, Rule]
    content_hash: str
    source: str

    def __getitem__(self, name: str) -> Any:
        """The value of a rule; rules were checked at load time, so a miss is a programming error."""
        return self.rules[name].value

    def clause(self, name: str) -> str:
        return self.rules[name].clause


def content_hash(document: Mapping[str, Any]) -> str:
    """SHA-256 over sorted-key JSON: formatting and key order do not change it, content does."""
    canonical = json.dumps(document, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def parse_policy(document: Mapping[str, Any], required: frozenset[str], source: str) -> Policy:
    """Check a loaded policy document against the rule names its stage requires."""
    if not isinstance(document, Mapping):
        raise PolicyFileError(f"{source}: a policy file must be a mapping with version/stage/rules.")
    missing_top = {"version", "stage", "rules"} - set(document)
    if missing_top:
        raise PolicyFileError(f"{source}: missing top-level key(s) {sorted(missing_top)}.")
    rules_doc = document["rules"]
    if not isinstance(rules_doc, Mapping):
        raise PolicyFileError(f"{source}: 'rules' must be a mapping of rule name to record.")
    missing, unknown = required - set(rules_doc), set(rules_doc) - required
    if missing or unknown:
        raise PolicyFileError(
            f"{source}: rules do not match what stage '{document['stage']}' needs "
            f"(missing: {sorted(missing)}, unknown: {sorted(unknown)})."
        )
    rules: dict[str, Rule] = {}
    for name, record in rules_doc.items():
        if not isinstance(record, Mapping) or "value" not in record or "clause" not in record:
            raise PolicyFileError(f"{source}: rule '{name}' needs a 'value' and a 'clause'.")
        extra = set(record) - {"value", "clause", "note"}
        if extra:
            raise PolicyFileError(f"{source}: rule '{name}' has unknown field(s) {sorted(extra)}.")
        rules[name] = Rule(record["value"], str(record["clause"]), str(record.get("note", "")))
    return Policy(
        stage=str(document["stage"]),
        version=int(document["version"]),
        rules=rules,
        content_hash=content_hash(document),
        source=source,
    )


def load_policy(stage: str, required: frozenset[str], policy_dir: Path = POLICY_DIR) -> Policy:
    """Load ``<policy_dir>/<stage>.yaml`` and check it."""
    path = policy_dir / f"{stage}.yaml"
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise PolicyFileError(f"Policy file {path} does not exist.") from exc
    except yaml.YAMLError as exc:
        raise PolicyFileError(f"{path}: not valid YAML ({exc.__class__.__name__}).") from exc
    policy = parse_policy(document, required, str(path))
    if policy.stage != stage:
        raise PolicyFileError(f"{path}: declares stage '{policy.stage}', expected '{stage}'.")
    return policy
