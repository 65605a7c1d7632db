"""Clinical table suite: subject identifier, declared codes, physiological ranges, date order.

GB/T 39725 §10.1 f (quality meets business needs), §11.3.4.5 c (missing values, duplicates,
uniqueness of subject IDs), §11.3.4.7 e (quality control at each processing stage).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import great_expectations as gx
import great_expectations.expectations as gxe

from seqlife.policy import Policy

SUITE = "clinical"


def build_suite(policy: Policy, columns: Iterable[str] | None = None,
                attrs: Mapping[str, Any] | None = None) -> gx.ExpectationSuite:
    """The clinical suite for a table with ``columns`` (None: every column the policy names).

    The subject column is the first of ``clinical_subject.columns`` the table has; a table with
    none of them gets an ``expect_column_to_exist`` that fails, since uniqueness of subject IDs
    must be verified (§11.3.4.5 c). Every other rule is skipped when its columns are absent.
    """
    present = None if columns is None else set(columns)

    def has(*names: str) -> bool:
        return present is None or all(name in present for name in names)

    def meta(rule: str, check: str) -> dict[str, str]:
        return {"rule": rule, "check": check, "clause": policy.clause(rule)}

    found: list[gxe.Expectation] = []
    subject_rule = policy["clinical_subject"]
    subject = next((c for c in subject_rule["columns"] if has(c)), None)
    if subject is None:
        found.append(gxe.ExpectColumnToExist(
            column=subject_rule["columns"][0],
            meta=meta("clinical_subject", "a subject identifier column: "
                      + " or ".join(subject_rule["columns"]))))
    else:
        if subject_rule.get("not_null", True):
            found.append(gxe.ExpectColumnValuesToNotBeNull(
                column=subject, meta=meta("clinical_subject", "subject identifier present")))
        if subject_rule.get("unique", True):
            found.append(gxe.ExpectColumnValuesToBeUnique(
                column=subject, meta=meta("clinical_subject", "one row per subject")))
    for column, codes in policy["clinical_value_sets"].items():
        if has(column):
            found.append(gxe.ExpectColumnValuesToBeInSet(
                column=column, value_set=list(codes),
                meta=meta("clinical_value_sets", "one of " + ", ".join(map(str, codes)))))
    for column, bounds in policy["clinical_ranges"].items():
        if has(column):
            found.append(gxe.ExpectColumnValuesToBeBetween(
                column=column, min_value=bounds["min"], max_value=bounds["max"],
                meta=meta("clinical_ranges", f"between {bounds['min']} and {bounds['max']}")))
    for pair in policy["clinical_date_order"]:
        if has(pair["earlier"], pair["later"]):
            found.append(gxe.ExpectColumnPairValuesAToBeGreaterThanB(
                column_A=pair["later"], column_B=pair["earlier"], or_equal=True,
                ignore_row_if="either_value_is_missing",
                meta=meta("clinical_date_order", f"{pair['later']} on or after {pair['earlier']}")))
    return gx.ExpectationSuite(name=SUITE, expectations=found,
                               meta={"policy_hash": policy.content_hash})
