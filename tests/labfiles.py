"""Sequencing files laid out as labs deliver them, written by htslib (pysam) for the tests: a
reference FASTA, a CRAM made against it, a trio gVCF and BCF. No seqlife generator is used, so
the layouts (read names, tags, header fields) are not ones our own code chose."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import pysam

CONTIGS = {"chr1": 40_000, "chr2": 25_000}


def write_reference(path: Path, seed: int = 5) -> dict[str, str]:
    rng = random.Random(seed)
    sequences = {name: "".join(rng.choice("ACGT") for _ in range(length))
                 for name, length in CONTIGS.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        for name, sequence in sequences.items():
            handle.write(f">{name} assembled\n")
            handle.writelines(sequence[i:i + 70] + "\n" for i in range(0, len(sequence), 70))
    return sequences


def write_cram(path: Path, fasta: Path, sequences: dict[str, str], sample_id: str, mrn: str,
               name: str, reads: int = 400) -> None:
    """A sorted CRAM as a lab pipeline writes it: the sample ID in @RG ID/SM, the read names
    and an MI tag; the patient's name in @RG DS and @CO; the MRN in the barcode tag."""
    header = {
        "HD": {"VN": "1.6", "SO": "coordinate"},
        "SQ": [{"SN": contig, "LN": len(seq), "M5": hashlib.md5(seq.encode()).hexdigest()}
               for contig, seq in sequences.items()],
        "RG": [{"ID": sample_id, "SM": sample_id, "LB": f"{sample_id}-lib", "PL": "ILLUMINA",
                "DS": f"patient {name}", "CN": "Lab of Hospital"}],
        "PG": [{"ID": "bwa", "PN": "bwa", "VN": "0.7.17",
                "CL": f"bwa mem /data/{name}/{sample_id}_R1.fastq.gz"}],
        "CO": [f"subject {mrn}"],
    }
    rng = random.Random(sample_id)
    contigs = list(sequences)
    positions = sorted((contig, rng.randrange(len(sequences[contigs[contig]]) - 200))
                       for contig in (rng.randrange(len(contigs)) for _ in range(reads)))
    with pysam.AlignmentFile(str(path), "wc", header=header,
                             reference_filename=str(fasta)) as out:
        for number, (contig, start) in enumerate(positions):
            segment = pysam.AlignedSegment(out.header)
            segment.query_name = f"{sample_id}_A00123:8:HFLOW:{number % 4 + 1}:1101:{number}:77"
            segment.reference_id, segment.reference_start = contig, start
            bases = list(sequences[contigs[contig]][start:start + 100])
            bases[50] = "A" if bases[50] != "A" else "C"
            segment.query_sequence = "".join(bases)
            segment.cigarstring = "100M"
            segment.query_qualities = pysam.qualitystring_to_array("F" * 100)
            segment.mapping_quality = 60
            segment.set_tag("RG", sample_id)
            segment.set_tag("BC", f"ACGTACGT-{mrn}")
            segment.set_tag("MI", f"{sample_id}/{number}")
            out.write(segment)


def write_trio(path: Path, members: list[str]) -> None:
    """A trio gVCF: reference blocks as <NON_REF>, the family in ##PEDIGREE, bgzip + .tbi."""
    child, father, mother = members
    header = pysam.VariantHeader()
    header.add_line("##source=GATK HaplotypeCaller")
    header.add_line(f"##PEDIGREE=<Child={child},Father={father},Mother={mother}>")
    header.add_line("##ALT=<ID=NON_REF,Description=\"Any non-reference allele\">")
    header.add_line("##INFO=<ID=END,Number=1,Type=Integer,Description=\"End of block\">")
    header.add_line("##FORMAT=<ID=GT,Number=1,Type=String,Description=\"Genotype\">")
    header.add_line("##FORMAT=<ID=DP,Number=1,Type=Integer,Description=\"Depth\">")
    header.add_line(f"##GATKCommandLine=<ID=HaplotypeCaller,CommandLine=\"-I {child}.bam\">")
    for contig, length in CONTIGS.items():
        header.contigs.add(contig, length=length)
    for member in members:
        header.add_sample(member)
    plain = path.with_suffix("")
    with pysam.VariantFile(str(plain), "w", header=header) as out:
        for position in range(1, 30_000, 1_000):
            record = out.new_record(contig="chr1", start=position - 1, stop=position + 499,
                                    alleles=("A", "<NON_REF>"))
            for member, genotype in zip(members, ((0, 0), (0, 0), (0, 0))):
                record.samples[member]["GT"] = genotype
                record.samples[member]["DP"] = 30
            out.write(record)
        record = out.new_record(contig="chr2", start=99, stop=100, alleles=("C", "T", "<NON_REF>"))
        for member, genotype in zip(members, ((0, 1), (0, 0), (1, 1))):
            record.samples[member]["GT"] = genotype
        out.write(record)
    pysam.tabix_index(str(plain), preset="vcf", force=True)


def to_bcf(vcf: Path, bcf: Path) -> None:
    with pysam.VariantFile(str(vcf)) as inp, \
            pysam.VariantFile(str(bcf), "wb", header=inp.header) as out:
        for record in inp:
            out.write(record)
