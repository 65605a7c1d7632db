"""De-identify one file outside the catalog (`seqlife deidentify table|vcf|bam|fastq IN --out OUT`).

Column roles come from a fresh classification of the file by content (no steward approval here:
the output is a working copy, not a release), and the same fail-closed rules apply: a column the
classification cannot place stops the run. Hospital exports are read whatever their encoding
(UTF-8, GBK/GB18030) or container (CSV, TSV, .xlsx, Parquet); output is always UTF-8. Secrets are
the project's, so surrogates match the catalog flow's.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import pyarrow as pa

from seqlife.classify.detectors import date_parser, load_detectors
from seqlife.classify.labels import label_table, load_classify_policy, read_header
from seqlife.collect import subject_surrogate, write_parquet
from seqlife.deidentify import report as reports
from seqlife.deidentify import sequencing, tables
from seqlife.deidentify.errors import DeidentificationError
from seqlife.deidentify.hierarchy import load_hierarchies
from seqlife.tableio import read_table_file, write_csv_utf8


def _write_reports(out: Path, report: dict[str, Any]) -> Path:
    out.with_name(out.name + ".report.json").write_bytes(reports.render_json(report))
    page = out.with_name(out.name + ".report.html")
    page.write_bytes(reports.render_html(report))
    return page


def deidentify_local_file(kind: str, src: Path, out: Path, *, surrogate_secret: bytes,
                          shift_secret: bytes, project: str) -> dict[str, Any]:
    """De-identify `src` into `out` and write `<out>.report.json` / `.report.html` beside it."""
    policy = tables.load_deidentify_policy()
    out.parent.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"dataset": src.name, "project": project,
                              "source": {"file": src.name, "policy_hash": policy.content_hash}}
    if kind == "table":
        table = read_table_file(src, src.name)
        detectors, classify_policy = load_detectors(), load_classify_policy()
        columns = {name: table.column(name) for name in table.column_names}
        labels, _, _ = label_table(src.name, columns, detectors, classify_policy, {})
        result = tables.deidentify_table(
            table.to_pandas(), tables.roles_from_labels(labels), policy,
            surrogate_secret=surrogate_secret, shift_secret=shift_secret,
            populations=tables.load_populations(), hierarchies=load_hierarchies(),
            parse_date=date_parser(detectors))
        output = pa.Table.from_pandas(result.table, preserve_index=False)
        if out.suffix == ".csv":
            write_csv_utf8(output, out)
        else:
            write_parquet(output, out)
        report.update(reports.table_report(result, policy))
    elif kind in ("vcf", "bam", "fastq"):
        with open(src, "rb") as handle:
            header = read_header(handle, kind, src.name)
        if kind == "fastq":
            token = header.fields["read_name"][0].split(":")[0]
            scrub = sequencing.scrub_fastq(src, out, {token: subject_surrogate(
                surrogate_secret, f"sample:{token}")})
        else:
            names = header.fields.get("samples" if kind == "vcf" else "RG.SM", ())
            sample_map = {name: subject_surrogate(surrogate_secret, name) for name in names}
            scrub = (sequencing.scrub_vcf(src, out, sample_map, policy["vcf_keep_meta"])
                     if kind == "vcf" else sequencing.scrub_bam(src, out, sample_map))
        report["files"] = [{"path": out.name, **asdict(scrub)}]
    else:
        raise DeidentificationError(f"Unknown file kind '{kind}': table, vcf, bam or fastq.")
    report["approval"] = {"status": "working copy: not released",
                          "approver_role": policy["approver_role"]}
    page = _write_reports(out, report)
    return {"out": str(out), "status": "written", "report_path": str(page), "report": report}
