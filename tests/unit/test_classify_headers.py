"""What a sequencing file says about itself is read from the start of its stream only: the SAM
header of a BAM or CRAM (a CRAM without its reference), a BAM's first read names and text tags,
a BCF's VCF header; damaged input gives a typed error (GB/T 39725 §10.2 a, d; SEQ §5)."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import pysam
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from seqlife.classify.headers import read_header
from seqlife.exceptions import ClassificationError

SAM_HEADER = (
    "@HD\tVN:1.6\tSO:coordinate\n"
    "@SQ\tSN:chr1\tLN:2000\tAS:GRCh38\n"
    "@RG\tID:SMP1\tSM:MR20230017\tLB:SMP1-lib\tPU:H3KLM.1\tPL:ILLUMINA\tBC:ACGTACGT\t"
    "DS:patient Zhang San\tDT:2023-04-01\tCN:Ward 7\n"
    "@PG\tID:bwa\tPN:bwa\tVN:0.7.17\tCL:bwa mem /data/zhangsan/SMP1_R1.fq.gz\n"
    "@PG\tID:samtools\tPN:samtools\tPP:bwa\tVN:1.17\tDS:sorted for MR20230017\n"
    "@CO\tpatient: Zhang San\n")


def reference(tmp_path: Path) -> Path:
    """A small indexed FASTA: CRAM encodes reads against it."""
    fasta = tmp_path / "ref.fa"
    fasta.write_text(">chr1\n" + "ACGT" * 500 + "\n")
    pysam.faidx(str(fasta))
    return fasta


def write_alignments(path: Path, text: str, names: list[str], ref: Path | None = None) -> Path:
    """A BAM (or a CRAM when ``ref`` is given) whose reads carry text and numeric tags."""
    header = pysam.AlignmentHeader.from_text(text)
    mode, extra = ("wc", {"reference_filename": str(ref)}) if ref else ("wb", {})
    with pysam.AlignmentFile(str(path), mode, header=header, **extra) as out:
        for i, name in enumerate(names):
            read = pysam.AlignedSegment(header)
            read.query_name = name
            read.reference_id, read.reference_start, read.cigarstring = 0, 10 * i, "8M"
            read.query_sequence = "ACGTACGT"
            read.query_qualities = pysam.qualitystring_to_array("IIIIIIII")
            read.set_tag("RG", "SMP1", "Z")
            read.set_tag("BC", "ACGTACGT", "Z")
            read.set_tag("MI", f"UMI-{i}-SMP1", "Z")
            read.set_tag("NM", 0, "i")
            read.set_tag("XB", [1, 2, 3])
            out.write(read)
    return path


CASAVA = [f"A00123:8:H3KLMDSXX:1:1101:{1000 + i}:{2000 + i}" for i in range(5)]


def test_bam_records_give_read_names_and_text_tags_only(tmp_path: Path) -> None:
    """SEQ §5: read names and text tags (Z, H) of the first records are header fields too;
    numeric and array tags hold no identifier and are not read."""
    header = read_header(io.BytesIO(write_alignments(tmp_path / "x.bam", SAM_HEADER, CASAVA)
                                    .read_bytes()), "bam", "x.bam")
    assert header.fields["read_name"] == tuple(CASAVA)
    assert header.fields["tag.MI"] == tuple(f"UMI-{i}-SMP1" for i in range(len(CASAVA)))
    assert {"tag.RG", "tag.BC"} <= set(header.fields)
    assert not {"tag.NM", "tag.XB"} & set(header.fields)
    assert header.fields["PG.PP"] == ("bwa",) and header.fields["CO"] == ("patient: Zhang San",)


def test_a_cram_is_read_from_a_stream_without_its_reference(tmp_path: Path) -> None:
    """The store hands classification a stream, and no reference: the SAM header is the first
    block of the first container (CRAM 3.1 §6-8), parsed from the prefix."""
    path = write_alignments(tmp_path / "x.cram", SAM_HEADER, CASAVA, reference(tmp_path))
    (tmp_path / "ref.fa").unlink()
    header = read_header(io.BytesIO(path.read_bytes()), "cram", "x.cram")
    assert header.fields["RG.SM"] == ("MR20230017",) and header.fields["CO"]


def test_a_damaged_or_unsupported_cram_is_refused_with_a_typed_error(tmp_path: Path) -> None:
    """Fail closed: a CRAM header that fails its CRC or comes in a version the reader does not
    know stops classification with the file named, nothing quoted from it."""
    data = bytearray(write_alignments(tmp_path / "x.cram", SAM_HEADER, CASAVA,
                                      reference(tmp_path)).read_bytes())
    flipped = bytearray(data)
    flipped[70] ^= 0xFF  # inside the SAM header block
    with pytest.raises(ClassificationError, match="x.cram: the CRAM .*CRC-32"):
        read_header(io.BytesIO(bytes(flipped)), "cram", "x.cram")
    data[4] = 4
    with pytest.raises(ClassificationError, match="x.cram: CRAM 4"):
        read_header(io.BytesIO(bytes(data)), "cram", "x.cram")


def test_a_bcf_header_reads_like_the_vcf_it_came_from(tmp_path: Path) -> None:
    """BCF (BGZF, magic BCF\\2\\2, the VCF text inside) gives the fields of the same VCF."""
    header = pysam.VariantHeader()
    for line in ("##fileDate=20230401", "##patient_name=Zhang San", "##contig=<ID=chr1,length=2000>",
                 '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">'):
        header.add_line(line)
    header.add_sample("MR20230017")
    for name, mode in (("x.vcf.gz", "wz"), ("x.bcf", "wb")):
        with pysam.VariantFile(str(tmp_path / name), mode, header=header) as out:
            record = out.new_record(contig="chr1", start=10, stop=11, alleles=("A", "T"))
            record.samples["MR20230017"]["GT"] = (0, 1)
            out.write(record)
    vcf, bcf = (read_header(io.BytesIO((tmp_path / name).read_bytes()), fmt, name).fields
                for name, fmt in (("x.vcf.gz", "vcf"), ("x.bcf", "bcf")))
    assert set(vcf) == set(bcf) and {"meta.patient_name", "meta.contig"} <= set(bcf)
    assert vcf["samples"] == bcf["samples"] == ("MR20230017",)


# --- hostile bytes ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def plain_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """A BAM inflated to its plain bytes (read_header takes those as they are) and a CRAM."""
    tmp_path = tmp_path_factory.mktemp("plain")
    bam = write_alignments(tmp_path / "x.bam", SAM_HEADER, CASAVA)
    cram = write_alignments(tmp_path / "x.cram", SAM_HEADER, CASAVA, reference(tmp_path))
    return {"bam": gzip.decompress(bam.read_bytes()), "cram": cram.read_bytes()}


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_damaged_headers_give_fields_or_a_typed_error(plain_files: dict[str, bytes],
                                                      data: st.DataObject) -> None:
    """Fail closed, in bounded time: a BAM or CRAM with any bytes changed or cut is read or
    refused with a ClassificationError, never a crash or a hang; so is a gzip bomb."""
    file_format = data.draw(st.sampled_from(sorted(plain_files)))
    content = bytearray(plain_files[file_format])
    for _ in range(data.draw(st.integers(1, 4))):
        content[data.draw(st.integers(4, len(content) - 1))] = data.draw(st.integers(0, 255))
    content = content[:data.draw(st.integers(8, len(content)))]
    try:
        read_header(io.BytesIO(bytes(content)), file_format, "x")
    except ClassificationError as refused:
        assert refused.message.startswith("x: ")


def test_a_gzip_bomb_is_inflated_no_further_than_the_prefix() -> None:
    bomb = gzip.compress(b"@" + b"A" * (64 << 20))
    header = read_header(io.BytesIO(bomb), "fastq", "x")
    assert len(header.fields["read_name"]) == 1
