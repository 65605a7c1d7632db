"""De-identify one file outside the catalog (`seqlife deidentify table|vcf|bam|fastq IN --out OUT`).

Column roles come from the content detectors (no steward approval here: the output is a working
copy, not a release); secrets are the project's, so surrogates match the catalog flow's.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from seqlife.classify.detectors import best_finding, detect_column, load_detectors
from seqlife.classify.labels import read_header
from seqlife.collect import subject_surrogate, write_parquet
from seqlife.deidentify import report as reports
from seqlife.deidentify import sequencing, tables
from seqlife.deidentify.errors import DeidentificationError
from seqlife.deidentify.hierarchy import load_hierarchies


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
        table = pq.read_table(src) if src.suffix == ".parquet" else pacsv.read_csv(src)
        detectors = load_detectors()
        roles = {}
        for name in table.column_names:
            finding = best_finding(detect_column(name, table.column(name), detectors))
            roles[name] = finding.detector if finding else ""
        populations = tables.load_populations()
        result = tables.deidentify_table(
            table.to_pandas(), roles, policy, surrogate_secret=surrogate_secret,
            shift_secret=shift_secret, populations=populations,
            hierarchies=tables.quasi_identifier_hierarchies(populations, load_hierarchies()))
        output = pa.Table.from_pandas(result.table, preserve_index=False)
        if out.suffix == ".csv":
            pacsv.write_csv(output, out)
        else:
            write_parquet(output, out)
        report.update({
            "table": {**asdict(result.transform), "subjects": len(result.code_index),
                      "rows_out": len(result.table)},
            "kanon": {"k": int(policy["k"]), "levels": result.kanon.levels,
                      "suppressed": result.kanon.suppressed, "k_achieved": result.kanon.k_achieved,
                      "classes": result.kanon.classes, "info_loss": result.kanon.info_loss},
            "risk": {**asdict(result.risk), "limits": policy["risk_limits"], "passed": True},
        })
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
