"""Policies as data with a content hash; the audit chain's pure rules (SEQ §7.3.2.2)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from seqlife import audit, policy
from seqlife.exceptions import AuditError, ConfigurationError, PolicyFileError
from seqlife.settings import Settings

REQUIRED = frozenset({"k"})


def doc(**rules):
    return {"version": 1, "stage": "x", "rules": rules}


def test_content_hash_ignores_key_order_but_not_values() -> None:
    a = policy.parse_policy(doc(k={"value": 5, "clause": "GB/T 39725 §10.2 e"}), REQUIRED, "a")
    b = policy.parse_policy({"rules": {"k": {"clause": "GB/T 39725 §10.2 e", "value": 5}},
                             "stage": "x", "version": 1}, REQUIRED, "b")
    c = policy.parse_policy(doc(k={"value": 4, "clause": "GB/T 39725 §10.2 e"}), REQUIRED, "c")
    assert a.content_hash == b.content_hash != c.content_hash
    assert a["k"] == 5 and a.clause("k") == "GB/T 39725 §10.2 e"


@pytest.mark.parametrize("rules, message", [
    ({}, "missing: \\['k'\\]"),
    ({"k": {"value": 1, "clause": "c"}, "typo": {"value": 1, "clause": "c"}}, "unknown: \\['typo'\\]"),
    ({"k": {"value": 1}}, "needs a 'value' and a 'clause'"),
    ({"k": {"value": 1, "clause": "c", "extra": 2}}, "unknown field"),
])
def test_policy_mismatch_raises_at_load_time_naming_file_and_key(rules, message) -> None:
    with pytest.raises(PolicyFileError, match=message):
        policy.parse_policy(doc(**rules), REQUIRED, "policies/x.yaml")


def test_shipped_collect_policy_loads_with_clauses() -> None:
    from seqlife.collect import load_collect_policy

    loaded = load_collect_policy()
    assert all(rule.clause for rule in loaded.rules.values())
    assert loaded["on_withdrawn"] == "exclude"


def _chain(n: int) -> list[audit.AuditEntry]:
    entries, prev = [], audit.GENESIS_HASH
    for seq in range(1, n + 1):
        entry = audit.seal(seq=seq, prev_hash=prev, ts=f"2026-01-01T00:00:0{seq}", actor="a",
                           role="steward", action="collect.register", object=f"dataset:d{seq}",
                           outcome="ok")
        entries.append(entry)
        prev = entry.hash
    return entries


def test_chain_detects_change_deletion_and_reordering() -> None:
    entries = _chain(4)
    assert audit.verify_chain(entries).ok
    changed = entries[:2] + [replace(entries[2], outcome="refused")] + entries[3:]
    assert audit.verify_chain(changed).first_bad_seq == 3
    deleted = entries[:1] + entries[2:]
    assert audit.verify_chain(deleted).first_bad_seq == 2
    swapped = [entries[0], replace(entries[2], seq=2), replace(entries[1], seq=3), entries[3]]
    assert audit.verify_chain(swapped).first_bad_seq == 2


def test_seal_refuses_identifiers_in_clear() -> None:
    for text in ("110105194912310029", "13812345678", "li@example.cn", "MR00001234"):
        with pytest.raises(AuditError):
            audit.seal(seq=1, prev_hash=audit.GENESIS_HASH, ts="t", actor="a", role="r",
                       action="x", object="dataset:d", outcome="ok", reason=f"about {text}")


def test_keystore_inside_the_store_is_refused(tmp_path: Path) -> None:
    """GB/T 39725 §10.1 g: keys are stored apart from data."""
    env = {"SEQLIFE_HOME": str(tmp_path), "SEQLIFE_KEYSTORE_DIR": str(tmp_path / "store" / "keys")}
    with pytest.raises(ConfigurationError, match="§10.1 g"):
        Settings.from_env(env)
    assert Settings.from_env({"SEQLIFE_HOME": str(tmp_path)}).keystore_dir == tmp_path / "keys"


def test_core_imports_no_framework_or_adapter() -> None:
    """Pure core, thin shell: seqlife/ (but its CLI, seqlife/cli/) imports no Prefect, boto3, GX, DVC, DB, infra."""
    import ast

    forbidden = {"prefect", "boto3", "botocore", "great_expectations", "dvc", "sqlalchemy",
                 "psycopg", "alembic", "infra", "tasks", "flows"}
    core = Path(policy.__file__).parent
    offenders = []
    for path in core.rglob("*.py"):
        if "cli" in path.relative_to(core).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in forbidden]
    assert offenders == []


def test_a_restored_trail_must_be_a_prefix_of_the_live_one() -> None:
    """GB/T 39725 §11.3.4.9, App. F: after a restore, a changed record is a fork and a record
    missing from the live trail is a gap; later live records are fine."""
    from seqlife.audit import compare_trails

    live = [(1, "a"), (2, "b"), (3, "c")]
    assert compare_trails(live, [(1, "a"), (2, "b")]).consistent
    fork = compare_trails(live, [(1, "a"), (2, "x")])
    assert (fork.consistent, fork.problem, fork.at_seq) == (False, "fork", 2)
    gap = compare_trails([(1, "a"), (3, "c")], [(1, "a"), (2, "b")])
    assert (gap.problem, gap.at_seq) == ("gap", 2)
