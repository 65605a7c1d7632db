"""Quality tasks: run the GX suites on tables, reduce and mask results, decide, render the report.

GX stays behind this module (CONVENTIONS 15): each validation builds an ephemeral context
(pandas data source -> dataframe asset -> whole-dataframe batch definition -> ValidationDefinition),
runs one suite from ``expectations/`` and hands the JSON result to the pure core, which keeps a
value-free :class:`~seqlife.quality.Summary` and a masked copy for the report. The unmasked result
never leaves :func:`validate_frame` (GB/T 39725 §10.2 a). The caller audits the decision and
stores the HTML report with the dataset version; nothing here touches the catalog or the store.
"""

from __future__ import annotations

import html
import logging
import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")  # clinical pipelines send no telemetry

import great_expectations as gx  # noqa: E402
import pandas as pd  # noqa: E402
from great_expectations.core.expectation_validation_result import (  # noqa: E402
    ExpectationSuiteValidationResultSchema,
)
from great_expectations.data_context.types.base import ProgressBarsConfig  # noqa: E402
from great_expectations.render.renderer import ValidationResultsPageRenderer  # noqa: E402
from great_expectations.render.view import DefaultJinjaPageView  # noqa: E402
from prefect import task  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402

from expectations import clinical, deidentified, sequencing_qc, variants  # noqa: E402
from infra.resources import Resources  # noqa: E402
from seqlife import quality as rules  # noqa: E402
from seqlife.policy import Policy  # noqa: E402

#: ``build_suite(policy, columns, attrs)`` of an ``expectations`` module (attrs: the table's
#: metadata, e.g. the quasi-identifiers a de-identified table declares).
SuiteBuilder = Callable[[Policy, Iterable[str], Mapping[str, Any]], gx.ExpectationSuite]

#: Suite name -> builder; the policy's ``suites`` rule says which of them the gate accepts.
SUITE_BUILDERS: Mapping[str, SuiteBuilder] = {
    clinical.SUITE: clinical.build_suite,
    variants.SUITE: variants.build_suite,
    sequencing_qc.SUITE: sequencing_qc.build_suite,
    deidentified.SUITE: deidentified.build_suite,
}


#: GX's root logger, and the one module logger GX pins to INFO itself (temporary docs-site noise).
_GX_LOGGERS = ("great_expectations", "great_expectations.data_context.types.base")


@contextmanager
def _gx_logs_silenced() -> Iterator[None]:
    """GX logs a failing metric's exception text, which can quote a data value (a cast error
    names the value): while validating, only CRITICAL records of GX pass. The text is kept,
    masked, in the result's exception_info (GB/T 39725 §10.2 a)."""
    loggers = [logging.getLogger(name) for name in _GX_LOGGERS]
    previous = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for logger, level in zip(loggers, previous):
            logger.setLevel(level)


def _context() -> Any:
    """A fresh in-memory GX context: nothing is written to disk, no progress bars on stderr."""
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    return context


@task(name="validate_frame", cache_policy=NO_CACHE)
def validate_frame(df: pd.DataFrame, suite_name: str, suite_builder: SuiteBuilder, policy: Policy,
                   table: str = "") -> tuple[rules.Summary, dict[str, Any]]:
    """Validate one table with one suite and return what may be kept of the result.

    Args:
        df: the table (computed columns such as ``_stay_days`` already added).
        suite_name: name of the suite in the result and the report.
        suite_builder: ``build_suite(policy, columns)`` of an ``expectations`` module.
        policy: the quality policy (thresholds and ``result_format``).
        table: label of the table (e.g. its path in the dataset) for messages and the report.

    Returns:
        The value-free summary and the masked GX result (``«masked»`` for every value). The raw
        result is dropped here and never returned, logged or stored.
    """
    suite = suite_builder(policy, [str(c) for c in df.columns], dict(df.attrs))
    suite.name = suite_name
    with _gx_logs_silenced(), warnings.catch_warnings():
        # One quasi-identifier is passed twice to the k-anonymity expectation (GX's multicolumn
        # domain needs two); GX then warns while listing the duplicate column's values.
        warnings.filterwarnings("ignore", "DataFrame columns are not unique", UserWarning)
        context = _context()
        suite = context.suites.add(suite)
        batch_definition = (context.data_sources.add_pandas("seqlife")
                            .add_dataframe_asset(suite_name)
                            .add_batch_definition_whole_dataframe("whole"))
        validation = context.validation_definitions.add(
            gx.ValidationDefinition(name=f"{suite_name}-validation", data=batch_definition,
                                    suite=suite))
        result = validation.run(batch_parameters={"dataframe": df},
                                result_format=policy["result_format"])
        raw = result.to_json_dict()
    del result
    summary = rules.summarise(raw, table)
    masked = rules.mask_result(raw)
    del raw
    masked.setdefault("meta", {})["seqlife_table"] = table
    return summary, masked


# --- the report -----------------------------------------------------------------------------

_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2rem;color:#1b1f24;
max-width:72rem}
h1{font-size:1.5rem}h2{font-size:1.2rem;margin-top:2rem}
table{border-collapse:collapse;width:100%;margin:.5rem 0 1rem}
th,td{border:1px solid #d0d7de;padding:.35rem .5rem;text-align:left;vertical-align:top;
font-size:.9rem}
th{background:#f6f8fa}td.num{text-align:right;font-variant-numeric:tabular-nums}
.ok{color:#1a7f37;font-weight:600}.fail{color:#cf222e;font-weight:600}
.decision{white-space:pre-wrap;border-left:4px solid #d0d7de;padding:.5rem 1rem;background:#f6f8fa}
.note{color:#57606a;font-size:.85rem}iframe{width:100%;height:48rem;border:1px solid #d0d7de}
"""


def _cell(value: object, numeric: bool = False) -> str:
    if value is None:
        text = "—"
    elif isinstance(value, float):
        text = f"{value:.2f}"
    else:
        text = str(value)
    css = ' class="num"' if numeric else ""
    return f"<td{css}>{html.escape(text)}</td>"


def _expectation_rows(masked: Mapping[str, Any]) -> list[str]:
    rows = []
    records = rules.describe_results(masked)
    for record in sorted(records, key=lambda r: r["success"]):  # failed first, order kept
        status = ('<td class="ok">passed</td>' if record["success"] else
                  '<td class="fail">error</td>' if record["raised_exception"] else
                  '<td class="fail">failed</td>')
        rows.append(
            "<tr>" + _cell(record["expectation"]) + _cell(record["column"] or "(table)")
            + _cell(record["check"]) + _cell(record["rule"]) + status
            + _cell(record["element_count"], True) + _cell(record["unexpected_count"], True)
            + _cell(record["unexpected_percent"], True) + "</tr>")
    return rows


def _gx_page(masked: Mapping[str, Any]) -> str:
    """GX's own Data Docs page for one (already masked) validation result."""
    loaded = ExpectationSuiteValidationResultSchema().load(dict(masked))
    return DefaultJinjaPageView().render(ValidationResultsPageRenderer().render(loaded))


@task(name="render_docs", cache_policy=NO_CACHE)
def render_docs(masked_results: Sequence[Mapping[str, Any]],
                decision: rules.Decision | None = None) -> str:
    """One self-contained HTML page for the masked validation results of a gate run.

    The page opens with the decision (if given) and a table per suite (expectation, columns,
    check, rule, status, rows, unexpected count and share), readable without a network; below
    each table, GX's own Data Docs page for that result is embedded (``iframe srcdoc``), rendered
    by GX's ValidationResultsPageRenderer from the masked result, so it shows ``«masked»`` where
    GX would show values. Only masked results reach this function.
    """
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             "<title>Quality gate report</title>", f"<style>{_STYLE}</style></head><body>",
             "<h1>Quality gate report</h1>",
             f'<p class="note">Unexpected values are never stored: every one is shown as '
             f"{html.escape(rules.MASK)} (GB/T 39725 §10.2 a).</p>"]
    if decision is not None:
        verdict = "passed" if decision.passed else "failed"
        parts.append(f'<p class="{"ok" if decision.passed else "fail"}">Gate {verdict}</p>')
        parts.append(f'<div class="decision">{html.escape(decision.message)}</div>')
    if not masked_results:
        parts.append("<p>No table was validated.</p>")
    for masked in masked_results:
        summary = rules.summarise(masked)
        meta = masked.get("meta") or {}
        label = str(meta.get("seqlife_table") or "")
        title = f"{label} — suite {summary.suite}" if label else f"suite {summary.suite}"
        state = "ok" if summary.success else "fail"
        parts.append(f"<h2>{html.escape(title)}</h2>")
        parts.append(f'<p><span class="{state}">{"passed" if summary.success else "failed"}'
                     f"</span> — {summary.evaluated} expectation(s) evaluated, "
                     f"{len(summary.failed)} failed.</p>")
        parts.append("<table><thead><tr><th>Expectation</th><th>Column(s)</th><th>Check</th>"
                     "<th>Rule</th><th>Status</th><th>Rows</th><th>Unexpected</th>"
                     "<th>Unexpected %</th></tr></thead><tbody>")
        parts += _expectation_rows(masked)
        parts.append("</tbody></table>")
        page = _gx_page(masked)
        parts.append("<details><summary>Great Expectations Data Docs page (masked)</summary>"
                     f'<iframe title="{html.escape(title)}" '
                     f'srcdoc="{html.escape(page, quote=True)}">'
                     "</iframe></details>")
    parts.append("</body></html>")
    return "\n".join(parts)


# --- the gate -------------------------------------------------------------------------------


@task(name="quality_gate", cache_policy=NO_CACHE)
def quality_gate(frames: Mapping[str, tuple[pd.DataFrame, str]], policy: Policy
                 ) -> tuple[rules.Decision, str]:
    """Validate every table with its suite, decide, and refuse if any check failed.

    Args:
        frames: table label -> (table, suite name). De-identified tables should already carry
            the stay columns of :func:`seqlife.quality.prepare_deidentified`.
        policy: the quality policy.

    Returns:
        The decision and the masked HTML report, when the gate passes.

    Raises:
        QualityGateFailed: a check failed; ``.message`` is the steward message and
            ``.report_html`` the masked report, for the caller to audit and store.
        QualityError: a suite name is unknown or not enabled by the policy.
    """
    summaries: list[rules.Summary] = []
    masked: list[dict[str, Any]] = []
    for label, (df, suite_name) in frames.items():
        if suite_name not in SUITE_BUILDERS or suite_name not in policy["suites"]:
            raise rules.QualityError(
                f"{label}: no quality suite '{suite_name}'; the policy enables "
                f"{list(policy['suites'])} ({policy.clause('suites')}).")
        summary, result = validate_frame.fn(df, suite_name, SUITE_BUILDERS[suite_name], policy,
                                            table=label)
        summaries.append(summary)
        masked.append(result)
    decision = rules.decide(summaries, policy)
    report = render_docs.fn(masked, decision)
    if not decision.passed:
        raise rules.QualityGateFailed(decision, report)
    return decision, report


def quality_frames_for_certification(table: pd.DataFrame | None
                                     ) -> tuple[list[dict[str, Any]], str, str]:
    """The quality evidence for DER §5 certification of a derived clinical table.

    Runs the de-identified suite (no direct identifier, k-anonymity, date order) without raising:
    certification records a failure as an unmet requirement.

    Returns:
        The summaries as plain dicts (suite, success, evaluated, failed, table), the masked HTML
        report, and the hash of the quality policy and the identifier detectors.
    """
    policy = rules.load_quality_policy()
    policy_hash = rules.gate_policy_hash(policy)
    if table is None:
        return [], render_docs.fn([], rules.decide([], policy)), policy_hash
    label = "tables/clinical.parquet"
    summary, masked = validate_frame.fn(rules.prepare_deidentified(table, policy),
                                        deidentified.SUITE, deidentified.build_suite, policy,
                                        table=label)
    report = render_docs.fn([masked], rules.decide([summary], policy))
    return rules.summaries_as_dicts([summary]), report, policy_hash


# --- the gate as a flow step ----------------------------------------------------------------


@task(name="intake_frames", cache_policy=NO_CACHE)
def intake_frames(clinical: pd.DataFrame, files: Sequence[tuple[str, str, str]], policy: Policy
                  ) -> dict[str, tuple[pd.DataFrame, str]]:
    """The tables the intake gate validates: the clinical table, one variant table for every VCF
    of the delivery and one QC row per FASTQ/BAM (SEQ §5).

    Args:
        clinical: the delivered clinical table.
        files: (label, local path, format) of each sequencing file; the label names it in the
            report (its path in the dataset).
        policy: the quality policy; ``qc_sample_reads`` and ``variant_sample_records`` bound how
            much of each file is read.
    """
    frames: dict[str, tuple[pd.DataFrame, str]] = {"tables/clinical.parquet": (clinical, "clinical")}
    metrics = {label: rules.sequencing_qc_metrics(path, fmt, int(policy["qc_sample_reads"]))
               for label, path, fmt in files if fmt in ("fastq", "bam")}
    if metrics:
        frames["sequencing QC"] = (rules.qc_table(metrics), sequencing_qc.SUITE)
    for label, path, fmt in files:  # one table per file, so a failure names the delivered file
        if fmt in ("vcf", "bcf"):
            frames[f"variants of {label}"] = (
                rules.variant_table(path, int(policy["variant_sample_records"])), variants.SUITE)
    return frames


@task(name="quality_gate_step", cache_policy=NO_CACHE)
def gate_step(res: Resources, frames: Mapping[str, tuple[pd.DataFrame, str]], obj: str,
              refused_report_key: str) -> tuple[rules.Decision, str, str]:
    """Run the gate inside a flow: on failure keep the masked report, audit, and stop the flow.

    Args:
        res: the flow's resources (store and audit trail).
        frames: table label -> (table, suite), as :func:`quality_gate` takes them.
        obj: the audit object (``dataset:NAME@vN``) the gate judged.
        refused_report_key: where the masked report is kept when the gate fails.
    Returns:
        The decision, the masked report (HTML, for the caller to keep with the version it stores)
        and the gate's policy hash.
    Raises:
        QualityGateFailed: after the report is stored and the failure audited.
    """
    policy = rules.load_quality_policy()
    policy_hash = rules.gate_policy_hash(policy)
    try:
        decision, report = quality_gate.fn(frames, policy)
    except rules.QualityGateFailed as exc:
        res.store.put_bytes(refused_report_key, exc.report_html.encode())
        res.audit.append("quality.fail", obj, "refused",
                         reason=f"{exc.message} Report kept at {refused_report_key}.",
                         policy_hash=policy_hash)
        raise
    res.audit.append("quality.pass", obj, "ok", reason=decision.message, policy_hash=policy_hash)
    return decision, report, policy_hash
