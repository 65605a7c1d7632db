"""De-identified output suite: no direct identifier, k-anonymity, consistent date shift.

- No value of any column may contain a resident ID, mobile number, e-mail address or medical
  record number (GB/T 39725 §10.2 a); the patterns are the classify stage's detectors.
- Every combination of the quasi-identifiers the de-identification declared (from the roles of
  the approved classification, in the table's metadata) is shared by at least k rows (§10.2 b, e),
  checked by the custom expectation :class:`ExpectQuasiIdentifiersToBeKAnonymous`. A table that
  declares none fails: k over an empty set proves nothing.
- Dates of a subject move together (§10.2 c 3; Table 6): when the shifts are supplied (see
  :func:`seqlife.quality.prepare_deidentified`) every date's shift equals the subject's shift.

**How k-anonymity is expressed in GX 1.x.** GX's ``UnexpectedRowsExpectation`` runs SQL and
supports no pandas data source, so k-anonymity is a multicolumn *map* expectation backed by a
registered map metric, ``multicolumn_values.k_anonymous``: for every row it answers "is this row's
equivalence class (rows equal on all quasi-identifiers, a missing value being a value) at least k
rows large?". The class sizes come from :func:`seqlife.deidentify.kanon.class_sizes`, the same
function the de-identification stage uses, so the gate and the search agree on what a class is.
Because it is a map expectation, the result has the usual ``unexpected_count`` (rows in classes
smaller than k) and GX's ``mostly``; ``ignore_row_if`` defaults to ``"never"`` so rows with a
missing quasi-identifier are counted, not skipped.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, Literal, Optional

import great_expectations as gx
import great_expectations.expectations as gxe
import pandas as pd
from great_expectations.compatibility import pydantic
from great_expectations.execution_engine import PandasExecutionEngine
from great_expectations.expectations.expectation import MulticolumnMapExpectation
from great_expectations.expectations.metrics.map_metric_provider import (
    MulticolumnMapMetricProvider,
    multicolumn_condition_partial,
)
from great_expectations.render import LegacyRendererType, RenderedStringTemplateContent
from great_expectations.render.renderer.renderer import renderer

from seqlife.deidentify.kanon import class_sizes
from seqlife.policy import Policy
from seqlife.quality import SHIFT_DAYS_PREFIX, SUBJECT_SHIFT_DAYS, identifier_patterns

SUITE = "deidentified"


class MulticolumnValuesKAnonymous(MulticolumnMapMetricProvider):
    """Row-wise: the row's quasi-identifier class has at least ``k`` rows (pandas only)."""

    condition_metric_name = "multicolumn_values.k_anonymous"
    condition_domain_keys = (
        "batch_id",
        "table",
        "column_list",
        "row_condition",
        "condition_parser",
        "ignore_row_if",
    )
    condition_value_keys = ("k", "last_is_subject")

    @multicolumn_condition_partial(engine=PandasExecutionEngine)
    def _pandas(cls, column_list: pd.DataFrame, k: int, last_is_subject: bool = False,
                **kwargs: Any) -> pd.Series:
        # Columns by position, so a quasi-identifier listed twice (the one-column case, see
        # build_suite) is one more identical key rather than an ambiguous label. With
        # ``last_is_subject`` the last column names each row's person: classes count people.
        frame = column_list.set_axis(range(column_list.shape[1]), axis=1)
        columns = list(frame.columns)
        subject = columns.pop() if last_is_subject else None
        sizes = class_sizes(frame, columns, subject)
        return pd.Series(sizes >= int(k), index=column_list.index)


class ExpectQuasiIdentifiersToBeKAnonymous(MulticolumnMapExpectation):
    """Expect every combination of the quasi-identifier values to be shared by >= k rows.

    GB/T 39725 §10.2 e: a row whose combination is shared by fewer than ``k`` rows is
    unexpected. GX's multicolumn domain needs at least two columns; a single quasi-identifier is
    passed twice (the class over (q, q) is the class over q).

    Args:
        column_list: the quasi-identifier columns.
        k: the minimum class size (5 under §10.2 e); required, so every stored configuration
            and report states it.
    """

    k: int = pydantic.Field(description="Minimum number of people sharing each combination.")
    last_is_subject: bool = pydantic.Field(
        False, description="The last column of column_list identifies each row's person; "
                           "classes are counted in distinct people.")
    ignore_row_if: Literal["all_values_are_missing", "any_value_is_missing", "never"] = "never"

    map_metric: ClassVar[Optional[str]] = "multicolumn_values.k_anonymous"
    success_keys: ClassVar[tuple[str, ...]] = ("k", "last_is_subject", "mostly")
    args_keys = ("column_list", "k")

    @pydantic.validator("k")
    def _k_positive(cls, value: int) -> int:
        if value < 1:
            raise ValueError("k must be at least 1.")
        return value

    @classmethod
    @renderer(renderer_type=LegacyRendererType.PRESCRIPTIVE)
    def _prescriptive_renderer(cls, configuration: Any = None, result: Any = None,
                               runtime_configuration: Optional[dict] = None, **kwargs: Any
                               ) -> list[RenderedStringTemplateContent]:
        """Data Docs line: 'every combination of a, b, c must be shared by at least k rows'."""
        params = dict(configuration.kwargs) if configuration else {}
        names = list(dict.fromkeys(params.get("column_list") or []))
        template = ("every combination of " + ", ".join(f"$column_{i}" for i in range(len(names)))
                    + " must be shared by at least $k rows")
        values = {f"column_{i}": name for i, name in enumerate(names)}
        values["k"] = params.get("k")
        styling = (runtime_configuration or {}).get("styling")
        return [RenderedStringTemplateContent(
            content_block_type="string_template",
            string_template={"template": template, "params": values, "styling": styling})]


def build_suite(policy: Policy, columns: Iterable[str] | None = None,
                attrs: Mapping[str, Any] | None = None) -> gx.ExpectationSuite:
    """The de-identified suite for a table with ``columns`` and metadata ``attrs``.

    Identifier patterns are checked on every column the table has (columns starting with '_' are
    computed by the gate and skipped); k-anonymity (k from ``attrs['k']``) on the quasi-identifiers
    the table declares under the policy's attribute — none declared, or a declared one missing,
    is an expectation that fails; the shift of every date equals its subject's shift when
    ``_shift_days__*`` columns were added by :func:`seqlife.quality.prepare_deidentified`.
    ``columns`` None builds the suite for documentation (quasi-identifiers shown as declared).
    """
    attrs = dict(attrs or {})
    attribute = policy["deidentified_quasi_identifiers"]["attribute"]
    if columns is None:  # the documentation form: every rule, on placeholder columns
        names = [EVERY_COLUMN, DECLARED, f"{SHIFT_DAYS_PREFIX}(each date)", SUBJECT_SHIFT_DAYS]
        attrs = {attribute: [DECLARED], "k": attrs.get("k", 0)}
    else:
        names = list(dict.fromkeys(columns))
    present = set(names)

    def meta(rule: str, check: str) -> dict[str, str]:
        return {"rule": rule, "check": check, "clause": policy.clause(rule)}

    found: list[gxe.Expectation] = []
    patterns = identifier_patterns(policy)
    for column in names:
        if column.startswith("_"):
            continue
        for detector, pattern in patterns.items():
            found.append(gxe.ExpectColumnValuesToNotMatchRegex(
                column=column, regex=pattern,
                meta=meta("deidentified_no_identifiers", f"contains no {detector}")))
    declared = [str(q) for q in attrs.get(attribute) or []]
    if columns is not None:
        if not declared:
            found.append(gxe.ExpectColumnToExist(
                column=DECLARED_NONE, meta=meta(
                    "deidentified_quasi_identifiers",
                    "the de-identification declares the quasi-identifiers it generalised "
                    "(none declared: k cannot be checked)")))
        for missing in (q for q in declared if q not in present):
            found.append(gxe.ExpectColumnToExist(
                column=missing, meta=meta("deidentified_quasi_identifiers",
                                          "a declared quasi-identifier is in the table")))
    quasi = [q for q in declared if q in present]
    if quasi:
        k = int(attrs.get("k", 0))
        subject = policy["deidentified_date_shift"]["subject"]
        people = subject in present
        found.append(ExpectQuasiIdentifiersToBeKAnonymous(
            column_list=quasi + [subject] if people else (quasi if len(quasi) > 1 else quasi * 2),
            k=max(k, 1), last_is_subject=people,
            meta=meta("deidentified_quasi_identifiers",
                      f"k >= {k} {'people' if people else 'rows'} over {', '.join(quasi)}")))
    if SUBJECT_SHIFT_DAYS in present:
        for column in (c for c in names if c.startswith(SHIFT_DAYS_PREFIX)):
            found.append(gxe.ExpectColumnPairValuesToBeEqual(
                column_A=column, column_B=SUBJECT_SHIFT_DAYS,
                ignore_row_if="either_value_is_missing",
                meta=meta("deidentified_date_shift",
                          f"{column.removeprefix(SHIFT_DAYS_PREFIX)} moved by the subject's "
                          "one offset")))
    return gx.ExpectationSuite(name=SUITE, expectations=found,
                               meta={"policy_hash": policy.content_hash})


#: The column a table without declared quasi-identifiers is asked to have (it never has it).
DECLARED_NONE = "(no quasi-identifiers declared)"
#: Placeholders of the documentation form of the suite.
EVERY_COLUMN, DECLARED = "(every column)", "(declared quasi-identifiers)"
