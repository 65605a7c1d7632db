"""Sequencing QC suite: one row per FASTQ/BAM with its reads, Q30, GC and mapped shares.

Sequencing QC data is part of the master data (SEQ §5); an empty file means an incomplete
delivery (GB/T 39725 §11.3.4.5 c); low base quality, an odd GC share or few mapped reads fail the
quality control of the processing stage (§11.3.4.7 e). The table comes from
:func:`seqlife.quality.qc_table`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import great_expectations as gx
import great_expectations.expectations as gxe

from seqlife.policy import Policy

SUITE = "sequencing_qc"


def build_suite(policy: Policy, columns: Iterable[str] | None = None,
                attrs: Mapping[str, Any] | None = None) -> gx.ExpectationSuite:
    """The QC suite for a table with ``columns`` (None: reads, q30_share, gc_share, mapped_share).

    ``mapped_share`` is empty for FASTQ rows and is then not judged; Q30 and GC shares must be
    present (they are empty only when a file has no reads).
    """
    present = None if columns is None else set(columns)

    def has(name: str) -> bool:
        return present is None or name in present

    def meta(rule: str, check: str) -> dict[str, str]:
        return {"rule": rule, "check": check, "clause": policy.clause(rule)}

    found: list[gxe.Expectation] = []
    if has("reads"):
        found.append(gxe.ExpectColumnValuesToBeBetween(
            column="reads", min_value=policy["qc_min_reads"],
            meta=meta("qc_min_reads", f"at least {policy['qc_min_reads']} read(s)")))
    if has("q30_share"):
        found.append(gxe.ExpectColumnValuesToNotBeNull(
            column="q30_share", meta=meta("qc_min_q30_share", "measured")))
        found.append(gxe.ExpectColumnValuesToBeBetween(
            column="q30_share", min_value=policy["qc_min_q30_share"], max_value=1,
            meta=meta("qc_min_q30_share", f"at least {policy['qc_min_q30_share']}")))
    if has("gc_share"):
        low, high = policy["qc_gc_share"]["min"], policy["qc_gc_share"]["max"]
        found.append(gxe.ExpectColumnValuesToNotBeNull(
            column="gc_share", meta=meta("qc_gc_share", "measured")))
        found.append(gxe.ExpectColumnValuesToBeBetween(
            column="gc_share", min_value=low, max_value=high,
            meta=meta("qc_gc_share", f"between {low} and {high}")))
    if has("mapped_share"):
        found.append(gxe.ExpectColumnValuesToBeBetween(
            column="mapped_share", min_value=policy["qc_min_mapped_share"], max_value=1,
            meta=meta("qc_min_mapped_share", f"at least {policy['qc_min_mapped_share']}")))
    return gx.ExpectationSuite(name=SUITE, expectations=found,
                               meta={"policy_hash": policy.content_hash})
