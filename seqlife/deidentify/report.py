"""De-identification report (JSON + HTML) and small-cell-suppressed summaries for public sharing.

The report holds column names, counts, chosen generalisation levels and risk figures only: never a
value from the data (GB/T 39725 §10.2 k; §11.4.2.4).
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd


def cohort_summary(df: pd.DataFrame, by: Sequence[str], small: int) -> pd.DataFrame:
    """Counts per combination of `by`; cells below `small` are suppressed (shown as missing)."""
    counts = df.groupby(list(by), dropna=False, observed=True).size().rename("count").reset_index()
    counts["count"] = counts["count"].astype("Int64").mask(counts["count"] < small)
    return counts


def allele_frequency_summary(vcf_paths: Sequence[Path], small: int) -> pd.DataFrame:
    """Cohort allele counts and frequencies per variant across the given VCFs, for public sharing:
    a variant carried by fewer than `small` alleles has its count and frequency suppressed
    (GB/T 39725 §11.4.2.4), so a rare variant cannot point at its carrier."""
    import pysam

    counts: dict[tuple[str, int, str, str], list[int]] = {}
    for path in vcf_paths:
        with pysam.VariantFile(str(path)) as vcf:
            for record in vcf:
                for index, alt in enumerate(record.alts or (), start=1):
                    tally = counts.setdefault((record.chrom, record.pos, record.ref, alt), [0, 0])
                    for sample in record.samples.values():
                        alleles = [a for a in (sample.get("GT") or ()) if a is not None]
                        tally[0] += sum(1 for a in alleles if a == index)
                        tally[1] += len(alleles)
    frame = pd.DataFrame(
        [(c, p, r, a, ac, an) for (c, p, r, a), (ac, an) in sorted(counts.items())],
        columns=["chrom", "pos", "ref", "alt", "allele_count", "allele_number"])
    frame["allele_frequency"] = frame["allele_count"] / frame["allele_number"].where(
        frame["allele_number"] > 0)
    hidden = frame["allele_count"] < small
    frame["allele_count"] = frame["allele_count"].astype("Int64").mask(hidden)
    frame["allele_frequency"] = frame["allele_frequency"].mask(hidden)
    return frame


def table_report(result: Any, policy: Any) -> dict[str, Any]:
    """The table part of a report: transforms, quasi-identifiers, k, attacker model and risk.

    ``result`` is a :class:`seqlife.deidentify.tables.TableResult`; names, counts, levels and
    shares only."""
    from dataclasses import asdict

    risk = asdict(result.risk)
    attacker = result.attacker
    return {
        "table": {**asdict(result.transform), "subjects": len(result.code_index),
                  "rows_out": int(len(result.table)), "withheld_dates": list(result.withheld)},
        "kanon": {"k": int(policy["k"]), "quasi_identifiers": list(result.kanon.levels),
                  "levels": result.kanon.levels, "suppressed": result.kanon.suppressed,
                  "k_achieved": result.kanon.k_achieved, "classes": result.kanon.classes,
                  "info_loss": result.kanon.info_loss},
        "attacker": {"knows": list(attacker.knows),
                     "matched_on": {a: list(c) for a, c in attacker.matched.items()},
                     "not_in_release": list(attacker.absent),
                     "dates_shifted": bool(result.transform.shifted),
                     "reidentified_share": risk["linkage_reidentified"],
                     "limit": policy["risk_limits"].get("linkage_reidentified"),
                     "clause": policy.clause("attacker")},
        "risk": {**risk, "limits": policy["risk_limits"], "passed": True},
    }


def summary_columns(result: Any) -> list[str]:
    """Columns of the public cohort summary: age, sex and coded diagnosis, by their roles."""
    wanted = ("age", "sex", "icd10")
    return [c for c, h in result.transform.quasi_identifiers.items() if h in wanted
            and c in result.table]


def render_json(report: Mapping[str, Any]) -> bytes:
    return json.dumps(report, indent=2, sort_keys=True, ensure_ascii=False, default=str).encode()


def _rows(mapping: Mapping[str, Any]) -> str:
    return "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(_fmt(v))}</td></tr>"
                   for k, v in mapping.items())


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value)) or "—"
    if isinstance(value, dict):
        return "; ".join(f"{k}: {_fmt(v)}" for k, v in value.items()) or "—"
    return str(value)


def _percent(value: Any) -> str:
    return f"{float(value):.1%}" if isinstance(value, (int, float)) else "—"


def render_html(report: Mapping[str, Any]) -> bytes:
    """A page a steward or committee member reads before approving the release."""
    sections = []
    attacker = report.get("attacker")
    if attacker:
        share, limit = attacker.get("reidentified_share"), attacker.get("limit")
        sections.append(
            "<section><h2>Attacker model</h2><p>An attacker who knows a patient's "
            f"<b>{html.escape(', '.join(attacker.get('knows', [])))}</b> and matches the raw "
            "records against this release re-identifies "
            f"<b>{_percent(share)}</b> of them (limit {_percent(limit)}; "
            f"{html.escape(str(attacker.get('clause', '')))}).</p>"
            f"<table>{_rows(attacker)}</table></section>")
    for title, key in (("Source and policy", "source"), ("Table transforms", "table"),
                       ("k-anonymity", "kanon"), ("Re-identification test", "risk"),
                       ("Sequencing files", "files"), ("Quality gate and identifier scan",
                                                       "quality"), ("Approval", "approval")):
        value = report.get(key)
        if value is None:
            continue
        if isinstance(value, list):
            body = "".join(f"<h3>{html.escape(str(item.get('path', '')))}</h3><table>"
                           f"{_rows(item)}</table>" for item in value)
        else:
            body = f"<table>{_rows(value)}</table>"
        sections.append(f"<section><h2>{title}</h2>{body}</section>")
    verdict = "passed" if report.get("risk", {}).get("passed") else "not passed"
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>De-identification report</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto;color:#222}}
table{{border-collapse:collapse;margin:.5em 0}}th,td{{border:1px solid #ccc;padding:.3em .6em;
text-align:left;vertical-align:top}}th{{background:#f4f4f4}}</style></head><body>
<h1>De-identification report</h1>
<p>Dataset <b>{html.escape(str(report.get('dataset', '')))}</b>, project
<b>{html.escape(str(report.get('project', '')))}</b>. Re-identification test: <b>{verdict}</b>.
This report contains no personal data (GB/T 39725 §10.2; §11.4.2.4).</p>
{''.join(sections)}
</body></html>
"""
    return page.encode("utf-8")


#: Leading characters a spreadsheet takes for a formula (OWASP CSV injection).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy whose text cells cannot run as spreadsheet formulas when a published CSV is opened:
    a cell starting with = + - @ or a tab/CR gets a leading apostrophe."""
    out = frame.copy()
    for column in out.columns:
        if out[column].dtype == object or pd.api.types.is_string_dtype(out[column]):
            out[column] = out[column].map(
                lambda v: "'" + v if isinstance(v, str) and v.startswith(_FORMULA_START) else v)
    return out
