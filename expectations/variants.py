"""Variant table suite: CHROM, POS, REF, ALT and GT of the table derived from a VCF (SEQ §5).

The table is built by :func:`seqlife.quality.variant_table`; quality control at each processing
stage (GB/T 39725 §11.3.4.7 e) covers the variant calls as much as the clinical data.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import great_expectations as gx
import great_expectations.expectations as gxe

from seqlife.policy import Policy

SUITE = "variants"

#: Column -> the policy rule holding its format regex.
FORMAT_RULES = {"CHROM": "variant_chrom", "REF": "variant_ref", "ALT": "variant_alt",
                "GT": "variant_gt"}  # fmt: skip
#: Columns every variant row must have.
REQUIRED = {"CHROM": "variant_chrom", "POS": "variant_min_pos", "REF": "variant_ref",
            "ALT": "variant_alt"}  # fmt: skip


def build_suite(policy: Policy, columns: Iterable[str] | None = None,
                attrs: Mapping[str, Any] | None = None) -> gx.ExpectationSuite:
    """The variants suite for a table with ``columns`` (None: all of CHROM, POS, REF, ALT, GT).

    GT may be empty (sites-only VCF); every other column must be filled and match its format.
    """
    present = None if columns is None else set(columns)

    def has(name: str) -> bool:
        return present is None or name in present

    def meta(rule: str, check: str) -> dict[str, str]:
        return {"rule": rule, "check": check, "clause": policy.clause(rule)}

    found: list[gxe.Expectation] = []
    for column, rule in REQUIRED.items():
        if has(column):
            found.append(gxe.ExpectColumnValuesToNotBeNull(
                column=column, meta=meta(rule, "present in every row")))
    if has("POS"):
        found.append(gxe.ExpectColumnValuesToBeBetween(
            column="POS", min_value=policy["variant_min_pos"],
            meta=meta("variant_min_pos", f"at least {policy['variant_min_pos']}")))
    for column, rule in FORMAT_RULES.items():
        if has(column):
            found.append(gxe.ExpectColumnValuesToMatchRegex(
                column=column, regex=policy[rule], meta=meta(rule, f"matches {policy[rule]}")))
    return gx.ExpectationSuite(name=SUITE, expectations=found,
                               meta={"policy_hash": policy.content_hash})
