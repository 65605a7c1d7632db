"""De-identify one file outside the catalog (`seqlife deidentify table|vcf|bam|fastq IN --out OUT`).

Column roles come from a fresh classification of the file by content (no steward approval here:
the output is a working copy, not a release), and the same fail-closed rules apply: a column the
classification cannot place stops the run. Hospital exports are read whatever their encoding
(UTF-8, GBK/GB18030) or container (CSV, TSV, .xlsx, Parquet); output is always UTF-8. Secrets are
the project's, so surrogates match the catalog flow's.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pyarrow as pa

from seqlife.classify.detectors import date_parser, load_detectors
from seqlife.classify.labels import label_table, load_classify_policy, read_header
from seqlife.collect import subject_surrogate, write_parquet
from seqlife.deidentify import report as reports
from seqlife.deidentify import residual, sequencing, tables
from seqlife.deidentify.errors import DeidentificationError
from seqlife.deidentify.hierarchy import load_hierarchies
from seqlife.tableio import read_table_file, write_csv_utf8


def _write_reports(out: Path, report: dict[str, Any]) -> Path:
    out.with_name(out.name + ".report.json").write_bytes(reports.render_json(report))
    page = out.with_name(out.name + ".report.html")
    page.write_bytes(reports.render_html(report))
    return page


#: The sequencing formats ``seqlife deidentify KIND IN --out OUT`` takes.
SEQUENCING_KINDS = ("vcf", "bcf", "bam", "cram", "fastq")


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
    elif kind in SEQUENCING_KINDS:
        with open(src, "rb") as handle:
            header = read_header(handle, kind, src.name)
        if kind == "fastq":
            token = header.fields["read_name"][0].split(":")[0]
            sample_map = {token: subject_surrogate(surrogate_secret, f"sample:{token}")}
            scrub = sequencing.scrub_fastq(src, out, sample_map)
        else:
            names = header.fields.get("samples", ()) if kind in ("vcf", "bcf") else (
                *header.fields.get("RG.SM", ()), *header.fields.get("RG.ID", ()))
            sample_map = {name: subject_surrogate(surrogate_secret, name) for name in names}
            scrub = {"vcf": lambda: sequencing.scrub_vcf(src, out, sample_map,
                                                         policy["vcf_keep_meta"]),
                     "bcf": lambda: sequencing.scrub_bcf(src, out, sample_map,
                                                        policy["vcf_keep_meta"]),
                     "bam": lambda: sequencing.scrub_bam(src, out, sample_map),
                     "cram": lambda: sequencing.scrub_cram(src, out, sample_map)}[kind]()
        try:  # the names this file gave must appear nowhere in what is written
            report["identifier_scan"] = residual.check_outputs([(out.name, out, kind)],
                                                               set(sample_map))
        except DeidentificationError:
            out.unlink(missing_ok=True)
            raise
        report["files"] = [{"path": out.name, **asdict(scrub)}]
    else:
        raise DeidentificationError(f"Unknown file kind '{kind}': table, "
                                    f"{', '.join(SEQUENCING_KINDS)}.")
    report["approval"] = {"status": "working copy: not released",
                          "approver_role": policy["approver_role"]}
    page = _write_reports(out, report)
    return {"out": str(out), "status": "written", "report_path": str(page), "report": report}


_LANE = re.compile(r"(?:^|[._-])(L[0-9]{3})(?=[._-])")
_READ = re.compile(r"(?:^|[._-])(?:R([12])|([12]))(?=[._-](?:f(?:ast)?q|[0-9]{3}))")
_EXTENSIONS = {"fastq": (".fastq", ".fastq.gz"), "bam": (".bam", ".bam"),
               "cram": (".cram", ".cram"), "vcf": (".vcf", ".vcf.gz"), "bcf": (".bcf", ".bcf")}


def output_names(files: Sequence[Mapping[str, str]], name_map: Mapping[str, str]) -> dict[str, str]:
    """Delivered path -> de-identified path: the sample's surrogate, the lane and read number of
    the delivered name (so paired R1/R2 and lanes stay apart, nothing else of the name kept: it
    may carry a name or an ID), the format's extension; a second file that would get the same
    name gets a counter."""
    names: dict[str, str] = {}
    taken: set[str] = set()
    for entry in files:
        base = Path(entry["path"]).name
        lane = _LANE.search(base)
        read = _READ.search(base)
        tags = [lane.group(1)] if lane else []
        if entry["format"] == "fastq":
            tags.append(f"R{(read.group(1) or read.group(2)) if read else 1}")
        stem = "_".join([name_map[entry["sample_id"]], *tags])
        extension = _EXTENSIONS[entry["format"]][1]
        name, counter = f"seq/{stem}{extension}", 1
        while name in taken:
            counter += 1
            name = f"seq/{stem}.{counter}{extension}"
        taken.add(name)
        names[entry["path"]] = name
    return names


def with_compression(relative: str, file_format: str, gzipped: bool) -> str:
    """The output name's extension as the content is: a plain VCF stays ``.vcf``."""
    plain, packed = _EXTENSIONS[file_format]
    if relative.endswith(packed) and not gzipped and plain != packed:
        return relative[: -len(packed)] + plain
    return relative
