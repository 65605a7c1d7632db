"""De-identified output suite: no direct identifier, k-anonymity, consistent date shift.

- No value of any column may contain a resident ID, mobile number, e-mail address or medical
  record number (GB/T 39725 §10.2 a); the patterns are the classify stage's detectors.
- Every combination of the quasi-identifiers present is shared by at least k rows (§10.2 b, e),
  checked by the custom expectation :class:`ExpectQuasiIdentifiersToBeKAnonymous`.
- Dates of a subject move together (§10.2 c 3; Table 6): discharge is not before admission, and
  when the original stays are supplied (``_original_stay_days``, see
  :func:`seqlife.quality.prepare_deidentified`) the shifted stay equals the original one.

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

from collections.abc import Iterable
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
from seqlife.quality import ORIGINAL_STAY_DAYS, STAY_DAYS, identifier_patterns

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
    condition_value_keys = ("k",)

    @multicolumn_condition_partial(engine=PandasExecutionEngine)
    def _pandas(cls, column_list: pd.DataFrame, k: int, **kwargs: Any) -> pd.Series:
        # Columns by position, so a quasi-identifier listed twice (the one-column case, see
        # build_suite) is one more identical key rather than an ambiguous label.
        frame = column_list.set_axis(range(column_list.shape[1]), axis=1)
        sizes = class_sizes(frame, list(frame.columns))
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

    k: int = pydantic.Field(description="Minimum number of rows sharing each combination.")
    ignore_row_if: Literal["all_values_are_missing", "any_value_is_missing", "never"] = "never"

    map_metric: ClassVar[Optional[str]] = "multicolumn_values.k_anonymous"
    success_keys: ClassVar[tuple[str, ...]] = ("k", "mostly")
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


def build_suite(policy: Policy, columns: Iterable[str] | None = None) -> gx.ExpectationSuite:
    """The de-identified suite for a table with ``columns`` (None: the policy's named columns).

    Identifier patterns are checked on every column the table has (columns starting with '_' are
    computed by the gate and skipped); k-anonymity on the quasi-identifiers present; the date
    order when both dates are present; the stay equality when ``_stay_days`` and
    ``_original_stay_days`` were added by :func:`seqlife.quality.prepare_deidentified`.
    """
    shift = policy["deidentified_date_shift"]
    qis = list(policy["deidentified_quasi_identifiers"])
    if columns is None:
        names = [shift["subject"], *qis, shift["admission"], shift["discharge"]]
        present = set(names)
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
    quasi = [q for q in qis if q in present]
    if quasi:
        k = policy["deidentified_k"]
        found.append(ExpectQuasiIdentifiersToBeKAnonymous(
            column_list=quasi if len(quasi) > 1 else quasi * 2, k=k,
            meta=meta("deidentified_k", f"k >= {k} over {', '.join(quasi)}")))
    if shift["admission"] in present and shift["discharge"] in present:
        found.append(gxe.ExpectColumnPairValuesAToBeGreaterThanB(
            column_A=shift["discharge"], column_B=shift["admission"], or_equal=True,
            ignore_row_if="either_value_is_missing",
            meta=meta("deidentified_date_shift",
                      f"shifted {shift['discharge']} on or after shifted {shift['admission']}")))
    if STAY_DAYS in present and ORIGINAL_STAY_DAYS in present:
        found.append(gxe.ExpectColumnPairValuesToBeEqual(
            column_A=STAY_DAYS, column_B=ORIGINAL_STAY_DAYS,
            ignore_row_if="either_value_is_missing",
            meta=meta("deidentified_date_shift", "shifted stay equals the original stay")))
    return gx.ExpectationSuite(name=SUITE, expectations=found,
                               meta={"policy_hash": policy.content_hash})
