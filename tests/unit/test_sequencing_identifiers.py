"""No identifier in any output byte of a sequencing file, and intake that does not follow links or
inflate bombs (GB/T 39725 §10.2 a, d; §11.3.4.4 a; SEQ §5)."""

from __future__ import annotations

import gzip
import os
import random
from pathlib import Path

import pysam
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from seqlife import collect
from seqlife.deidentify import residual
from seqlife.deidentify.sequencing import scrub_bam
from seqlife.exceptions import CollectError, MalformedFile

COLLECT = collect.load_collect_policy()


def make_bam(path: Path, sample_id: str, mrn: str, names: list[str]) -> Path:
    """A BAM as a lab writes it: read group named by the lab's sample ID, SM the record number,
    the sample ID in every read name and RG tag."""
    header = {"HD": {"VN": "1.6", "SO": "unsorted"}, "SQ": [{"SN": "chr1", "LN": 100000}],
              "RG": [{"ID": sample_id, "SM": mrn, "LB": f"{sample_id}-lib", "PL": "ILLUMINA"}],
              "PG": [{"ID": "bwa", "PN": "bwa", "CL": f"bwa mem ref.fa {sample_id}_R1.fq.gz"}]}
    with pysam.AlignmentFile(str(path), "wb", header=header) as out:
        for i, name in enumerate(names):
            read = pysam.AlignedSegment(out.header)
            read.query_name = name
            read.query_sequence = "ACGT" * 25
            read.query_qualities = pysam.qualitystring_to_array("I" * 100)
            read.reference_id, read.reference_start, read.cigarstring = 0, 100 + i, "100M"
            read.mapping_quality = 60
            read.set_tag("RG", sample_id, "Z")
            read.set_tag("BC", "ACGTACGT", "Z")
            out.write(read)
    return path


def every_byte(path: Path) -> bytes:
    with gzip.open(path, "rb") as handle:
        return handle.read()


LAYOUTS = [
    "{s}:RUN1234:{n}",                                        # the synthetic cohort's layout
    "A00123:88:HXXXXDSXY:1:1101:{x}:{y}",                     # CASAVA 1.8 (no sample token)
    "{s}_A00123:88:HXXXXDSXY:1:1101:{x}:{y}",                 # sample-prefixed CASAVA
    "V350012345L1C001R00100{x}",                              # MGI/DNBSEQ
    "{s}.V350012345L1C001R00100{x}",                          # sample-prefixed MGI
    "HWI-ST1234:8:1101:{x}:{y}#{s}/1",                        # pre-1.8 Illumina, sample as index
]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(layout=st.sampled_from(LAYOUTS), sample=st.from_regex(r"[A-Z]{2,4}[0-9]{4,9}", fullmatch=True),
       seed=st.integers(0, 10**6))
def test_no_raw_sample_token_survives_any_read_name_layout(tmp_path, layout, sample, seed) -> None:
    """GB/T 39725 §10.2 a, d: whatever the platform's read-name layout, the sample token is
    replaced (the rest kept), the read group and its tags renamed; no byte of the output holds
    the lab's sample ID or the record number."""
    rng = random.Random(seed)
    mrn = f"MR{seed:08d}"
    names = [layout.format(s=sample, n=i, x=rng.randrange(1000, 30000), y=rng.randrange(1000, 30000))
             for i in range(40)]
    work = Path(tmp_path) / f"{sample}-{seed}"
    work.mkdir(exist_ok=True)
    src = make_bam(work / "in.bam", sample, mrn, names)
    out = work / "out.bam"
    scrub_bam(src, out, {mrn: "S-subject", sample: "S-sample"})
    data = every_byte(out)
    assert sample.encode() not in data and mrn.encode() not in data
    with pysam.AlignmentFile(str(out)) as bam:
        reads = list(bam.fetch(until_eof=True))
    assert len(reads) == len(names)
    assert [r.query_name for r in reads] == [n.replace(sample, "S-sample") for n in names]
    assert {r.get_tag("RG") for r in reads} == {"S-sample"}
    assert {r.get_tag("BC") for r in reads} == {"ACGTACGT"}  # a barcode is not an identifier


def test_the_residual_scan_finds_an_identifier_anywhere_and_names_only_file_and_part(
        tmp_path) -> None:
    """The last check reads every output byte (decompressed, streamed, across chunk borders) and
    says where, never what."""
    secret = "SMP0123456"
    clean = tmp_path / "clean.vcf.gz"
    with gzip.open(clean, "wb") as handle:
        handle.write(b"##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n")
    dirty = tmp_path / "dirty.fastq.gz"
    padding = b"@r\n" + b"A" * (residual.CHUNK - 8) + b"\n+\n"
    with gzip.open(dirty, "wb") as handle:  # the identifier straddles the 1 MiB chunk border
        handle.write(padding + secret.encode() + b"\n")
    hits = residual.scan([("seq/a.vcf.gz", clean, "vcf"), ("seq/b.fastq.gz", dirty, "fastq")],
                         residual.Scanner.of({secret, "MR00000001"}))
    assert hits == {"seq/b.fastq.gz": {"read names or tags"}}
    with pytest.raises(residual.ResidualIdentifier) as caught:
        residual.check_outputs([("seq/b.fastq.gz", dirty, "fastq")], {secret})
    assert "seq/b.fastq.gz" in caught.value.message and secret not in caught.value.message
    assert residual.identifiers_of([]) == frozenset()


def test_short_values_are_not_searched_for(tmp_path) -> None:
    assert residual.identifiers_of([(__import__("pandas").DataFrame(
        {"x": ["ab", "王平", "SMP1"]}), ["x"])]) == frozenset({"王平"})


def test_links_in_a_delivery_are_refused_naming_them(tmp_path) -> None:
    """A symlink to another patient's file elsewhere on disk is never followed and collected."""
    outside = tmp_path / "elsewhere.fastq.gz"
    outside.write_bytes(b"x")
    delivery = tmp_path / "delivery"
    (delivery / "seq").mkdir(parents=True)
    os.symlink(outside, delivery / "seq" / "a.fastq.gz")
    with pytest.raises(CollectError, match="seq/a.fastq.gz: a symbolic link"):
        collect.refuse_links(delivery)
    (delivery / "seq" / "a.fastq.gz").unlink()
    os.link(outside, delivery / "seq" / "b.fastq.gz")
    with pytest.raises(CollectError, match="seq/b.fastq.gz: a hard link"):
        collect.refuse_links(delivery)


def test_a_decompression_bomb_is_refused_at_the_policy_ratio(tmp_path) -> None:
    """A few hundred kB that inflate to 200 MB of one repeated read are refused long before the
    end, at the ratio the policy sets."""
    ratio = float(COLLECT["max_decompression_ratio"])
    bomb = tmp_path / "bomb.fastq.gz"
    record = b"@r1\n" + b"A" * 150 + b"\n+\n" + b"I" * 150 + b"\n"
    with gzip.open(bomb, "wb", compresslevel=9) as handle:
        for _ in range(200):
            handle.write(record * 6000)
    assert (200 * 6000 * len(record)) / bomb.stat().st_size > ratio
    with pytest.raises(MalformedFile, match=f"more than {ratio:g} times"):
        collect.check_fastq(bomb, "seq/bomb.fastq.gz", max_ratio=ratio)


def test_index_files_are_accepted_beside_their_data_and_checked(tmp_path) -> None:
    """SEQ §5: .bai/.csi/.tbi/.crai travel with their data file; a stale index is refused."""
    suffixes = COLLECT["index_suffixes"]
    listed = {"seq/a.bam", "seq/a.vcf.gz"}
    assert collect.index_target("seq/a.bam.bai", suffixes, listed) == "seq/a.bam"
    assert collect.index_target("seq/a.bai", suffixes, listed) == "seq/a.bam"
    assert collect.index_target("seq/a.vcf.gz.tbi", suffixes, listed) == "seq/a.vcf.gz"
    assert collect.index_target("seq/b.bam.bai", suffixes, listed) is None
    bam = make_bam(tmp_path / "a.bam", "SMP1", "MR1", [f"r{i}" for i in range(10)])
    pysam.index(str(bam))
    collect.check_index(bam, Path(f"{bam}.bai"), "seq/a.bam.bai")
    other = make_bam(tmp_path / "b.bam", "SMP2", "MR2", [f"r{i}" for i in range(500)])
    stale = tmp_path / "stale.bai"
    stale.write_bytes(b"BAI\x01" + b"\x00" * 3)
    with pytest.raises(MalformedFile, match="does not open with the file it indexes"):
        collect.check_index(other, stale, "seq/b.bam.bai")


def test_output_names_keep_lane_and_read_apart_and_nothing_else_of_the_delivered_name() -> None:
    """Paired R1/R2 (Illumina `_L001_R1_001`, `_1.fq`) stay two files; a patient's name in the
    delivered file name never reaches the output; a plain VCF stays `.vcf`."""
    from seqlife.deidentify.files import output_names, with_compression

    files = [{"path": p, "format": f, "sample_id": s} for p, f, s in [
        ("seq/SMP1_S1_L001_R1_001.fastq.gz", "fastq", "SMP1"),
        ("seq/SMP1_S1_L001_R2_001.fastq.gz", "fastq", "SMP1"),
        ("seq/zhangsan_1.fq.gz", "fastq", "SMP2"), ("seq/zhangsan_2.fq.gz", "fastq", "SMP2"),
        ("seq/SMP1.bam", "bam", "SMP1"), ("seq/SMP1.sorted.bam", "bam", "SMP1"),
        ("seq/SMP1.vcf", "vcf", "SMP1")]]
    names = output_names(files, {"SMP1": "S-a", "SMP2": "S-b"})
    assert len(set(names.values())) == len(files)
    assert names["seq/SMP1_S1_L001_R2_001.fastq.gz"] == "seq/S-a_L001_R2.fastq.gz"
    assert names["seq/zhangsan_2.fq.gz"] == "seq/S-b_R2.fastq.gz"
    assert not any("zhangsan" in n or "SMP" in n for n in names.values())
    assert with_compression(names["seq/SMP1.vcf"], "vcf", gzipped=False) == "seq/S-a.vcf"


def test_a_fastq_whose_reads_name_another_sample_of_the_sheet_is_refused(tmp_path) -> None:
    """A file delivered for SMP1 whose read names say SMP2 may be another patient's."""
    fastq = tmp_path / "a.fastq"
    fastq.write_bytes(b"".join(b"@SMP2:RUN1:%d\nACGT\n+\nIIII\n" % i for i in range(5)))
    check = collect.check_fastq(fastq, "seq/a.fastq")
    planned = collect.PlannedFile("seq/a.fastq", "fastq", "SMP1", "MR1")
    collect.check_inner_sample(check, planned, {"SMP1", "MR1"})  # its own sample: fine
    with pytest.raises(CollectError, match="read names name another sample"):
        collect.check_inner_sample(check, planned, {"SMP1", "SMP2", "MR1", "MR2"})
    assert collect.listed_files("seq/a_R1.fq.gz; seq/a_R2.fq.gz") == ["seq/a_R1.fq.gz",
                                                                       "seq/a_R2.fq.gz"]


def test_bcf_is_classified_and_a_damaged_cram_is_refused_with_a_typed_error(tmp_path) -> None:
    """Fail closed: a header classification cannot read is never approved silently (it was a
    KeyError for CRAM and a traceback for BCF); a BCF's header is now listed like a VCF's."""
    from seqlife.classify.detectors import load_detectors
    from seqlife.classify.labels import classify_file, load_classify_policy
    from seqlife.exceptions import ClassificationError

    header = pysam.VariantHeader()
    header.add_line("##contig=<ID=chr1,length=1000>")
    header.add_line('##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">')
    header.add_sample("SMP1")
    with pysam.VariantFile(str(tmp_path / "x.bcf"), "wb", header=header) as out:
        record = out.new_record(contig="chr1", start=10, stop=11, alleles=("A", "T"))
        record.samples["SMP1"]["GT"] = (0, 1)
        out.write(record)
    fields, _ = classify_file(tmp_path / "x.bcf", load_detectors(), load_classify_policy())
    assert {"samples", "meta.contig", "meta.FORMAT"} <= {f.field for f in fields}
    (tmp_path / "x.cram").write_bytes(b"CRAM\x03\x00" + b"\x00" * 26)
    with pytest.raises(ClassificationError, match="x.cram: the CRAM header is truncated"):
        classify_file(tmp_path / "x.cram", load_detectors(), load_classify_policy())
