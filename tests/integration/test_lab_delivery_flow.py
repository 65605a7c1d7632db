"""A delivery shaped as labs ship it — CRAM with its reference FASTA, BAM with .bai, paired FASTQ,
BCF, a trio gVCF with ##PEDIGREE — through collect → classify → deidentify → certify (SEQ §5;
GB/T 39725 §10.2 a, d; RARE §4.5).

No generator of ours writes these layouts: the files are made here by htslib writers (pysam), with
the identifiers where labs put them (read groups, DS/CN, BC/MI tags, read names, ##PEDIGREE).
"""

from __future__ import annotations

import csv
import gzip
from pathlib import Path

import pysam
import pytest
from conftest import as_role, plaintext_files
from labfiles import to_bcf, write_cram, write_reference, write_trio

from infra.resources import Resources

pytestmark = [pytest.mark.usefixtures("prefect_backend"),
              pytest.mark.parametrize("backend", ["embedded"], indirect=True)]

def shape_delivery(cohort: Path) -> tuple[list[dict], set[str]]:
    """Rewrite the synthetic delivery into the lab layout; returns the sheet and the raw
    identifiers (MRNs, sample IDs, names, resident IDs, phones, e-mails) to look for."""
    with (cohort / "samples.csv").open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    with (cohort / "consents.csv").open(encoding="utf-8", newline="") as handle:
        withdrawn = {r["mrn"] for r in csv.DictReader(handle) if r["withdrawn_on"]}
    with (cohort / "clinical.csv").open(encoding="utf-8", newline="") as handle:
        clinical = list(csv.DictReader(handle))
    names = {row["mrn"]: row["name"] for row in clinical}
    secrets = {row[c] for row in clinical for c in ("mrn", "name", "id_number", "mobile", "email")}
    secrets |= {row["sample_id"] for row in rows}
    active = [row for row in rows if row["mrn"] not in withdrawn]
    paired, cram, bcf, *trio = active[:6]
    for row in rows:
        row["reference"] = ""
    # paired-end FASTQ: R1;R2 linked as one sample
    records = gzip.decompress((cohort / paired["fastq"]).read_bytes())
    r1, r2 = (paired["fastq"].replace(".R1.fastq.gz", f"_S1_L001_R{n}_001.fastq.gz")
              for n in (1, 2))
    (cohort / r1).write_bytes(gzip.compress(records))
    (cohort / r2).write_bytes(gzip.compress(records))
    (cohort / paired["fastq"]).unlink()
    paired["fastq"] = f"{r1};{r2}"
    # CRAM with the reference FASTA delivered beside it and declared in the sheet
    fasta = cohort / "ref" / "mini.fa"
    sequences = write_reference(fasta)
    (cohort / cram["bam"]).unlink()
    cram["bam"] = cram["bam"].replace(".bam", ".cram")
    write_cram(cohort / cram["bam"], fasta, sequences, cram["sample_id"], cram["mrn"],
               names[cram["mrn"]])
    pysam.index(str(cohort / cram["bam"]))
    cram["reference"] = "ref/mini.fa"
    # BCF instead of the bgzip VCF
    vcf = cohort / bcf["vcf"]
    bcf["vcf"] = bcf["vcf"].replace(".vcf.gz", ".bcf")
    to_bcf(vcf, cohort / bcf["vcf"])
    vcf.unlink()
    Path(f"{vcf}.tbi").unlink()
    # a trio gVCF listed on the three members' rows
    write_trio(cohort / "seq" / "family7.g.vcf.gz", [row["sample_id"] for row in trio])
    for row in trio:
        row["vcf"] = f"{row['vcf']};seq/family7.g.vcf.gz"
    for row in rows:  # every BAM sorted and indexed, as labs deliver them
        if row["bam"].endswith(".bam"):
            pysam.index(str(cohort / row["bam"]))
    with (cohort / "samples.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return rows, {s for s in secrets if s}


def test_a_lab_delivery_in_every_format_leaves_no_identifier_and_every_output_is_valid(
        resources: Resources, cohort: Path, tmp_path: Path) -> None:
    """SEQ §5; GB/T 39725 §10.2 a, d: CRAM (+ reference), BAM (+ .bai), paired FASTQ, BCF and a
    trio gVCF are collected, classified, de-identified and certified; every output decodes
    (samtools quickcheck, bcftools view), has its own index that answers a region query, and no
    output byte — decompressed, CRAM decoded — holds a raw identifier of the source."""
    from flows.certify import certify_flow
    from flows.classify import classify_flow
    from flows.collect import collect_flow
    from flows.deidentify import deidentify_flow
    from seqlife.classify.labels import load_classify_policy
    from seqlife.deidentify.tables import load_deidentify_policy
    from tasks.classify import approve
    from tasks.deidentify import approve as committee_approve

    rows, secrets = shape_delivery(cohort)
    collected = collect_flow(str(cohort), "lab")
    assert collected["created"]
    classify_flow("lab")
    approve(resources, "lab", None, [], load_classify_policy())
    result = deidentify_flow("lab", "p9")
    committee_approve(as_role(resources, "committee"), "lab", "p9", None,
                      load_deidentify_policy())
    assert certify_flow(result["dataset"])["signed"]["signature"]["algorithm"] == "Ed25519"

    out = tmp_path / "out"
    for relative, body in plaintext_files(resources, "lab--p9").items():  # stored sealed
        target = out / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(body)
    files = sorted(result["files"])
    kinds = {suffix: [f for f in files if f.endswith(suffix)]
             for suffix in (".cram", ".crai", ".bam", ".bai", ".bcf", ".csi", ".vcf.gz", ".tbi",
                            "_R1.fastq.gz", "_R2.fastq.gz")}
    assert all(kinds.values()), {k: len(v) for k, v in kinds.items()}
    encoded = {s.encode() for s in secrets}
    for relative in files:
        blob = (out / relative).read_bytes()
        if blob[:2] == b"\x1f\x8b":
            blob = gzip.decompress(blob)
        if relative.endswith(".cram"):
            with pysam.AlignmentFile(str(out / relative), "rc") as cram:
                blob += str(cram.header).encode() + "\n".join(
                    r.to_string() for r in cram.fetch(until_eof=True)).encode()
        assert not [s for s in encoded if s in blob], relative
    for relative in kinds[".bam"] + kinds[".cram"]:
        pysam.samtools.quickcheck(str(out / relative))
        with pysam.AlignmentFile(str(out / relative)) as alignments:
            contig = alignments.references[0]
            assert alignments.check_index()
            assert sum(1 for _ in alignments.fetch(contig)) > 0
    for relative in kinds[".bcf"] + kinds[".vcf.gz"]:
        assert pysam.bcftools.view("-H", str(out / relative))
        with pysam.VariantFile(str(out / relative)) as variants:
            assert variants.index is not None
            contig = next(iter(variants.header.contigs))
            list(variants.fetch(contig))
    trio = next(f for f in kinds[".vcf.gz"]
                if "NON_REF" in gzip.decompress((out / f).read_bytes()).decode())
    with pysam.VariantFile(str(out / trio)) as family:
        members = list(family.header.samples)
        pedigree = [str(r) for r in family.header.records if r.key == "PEDIGREE"]
    assert len(members) == 3 and not set(members) & secrets
    assert len(pedigree) == 1 and all(member in pedigree[0] for member in members)
