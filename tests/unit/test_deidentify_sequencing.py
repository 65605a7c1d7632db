"""Sequencing headers scrubbed in streaming: VCF samples and meta lines, BAM @RG/@PG/@CO, FASTQ read
names — records untouched, record blocks copied verbatim (GB/T 39725 §10.2 a, d, f; RARE §4.5).

Fixtures are synthetic (``seqlife.synth.generate_cohort``, seed 7): 3 subjects with 300 reads and
200 variants each, plus one subject with 5,000 variants so its VCF spans many BGZF blocks.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import struct
import tempfile
import zlib
from pathlib import Path

import pysam
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from seqlife.deidentify.seqerrors import ScrubError
from seqlife.deidentify.sequencing import BGZF_EOF, scrub_bam, scrub_fastq, scrub_vcf
from seqlife.synth import generate_cohort

#: A wide keep list (the VCF 4.2 §1.2 standard keys), so ##SAMPLE/##PEDIGREE renaming is tested.
KEEP_META = ["fileformat", "fileDate", "source", "reference", "contig", "INFO", "FORMAT", "FILTER",
             "ALT", "PEDIGREE", "SAMPLE", "META"]
MINIMAL_META = ["fileformat", "contig", "INFO", "FORMAT", "FILTER", "ALT", "reference"]


# --- fixtures --------------------------------------------------------------------------------


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def subjects_of(root: Path) -> list[dict[str, str]]:
    """One dict per subject: sample_id, mrn, name, file paths and the surrogate code."""
    names = {row["mrn"]: row["name"] for row in read_rows(root / "clinical.csv")}
    return [{**row, "name": names[row["mrn"]], "surrogate": f"PSN-{index:04d}",
             "vcf": str(root / row["vcf"]), "bam": str(root / row["bam"]),
             "fastq": str(root / row["fastq"])}
            for index, row in enumerate(read_rows(root / "samples.csv"), 1)]  # fmt: skip


@pytest.fixture(scope="module")
def subjects(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, str]]:
    root = tmp_path_factory.mktemp("seqcohort")
    generate_cohort(root, subjects=3, reads_per_subject=300, variants_per_subject=200)
    return subjects_of(root)


@pytest.fixture(scope="module")
def big_vcf_subject(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("bigvcf")
    generate_cohort(root, subjects=1, reads_per_subject=1, variants_per_subject=5000)
    return subjects_of(root)[0]


def sample_map(subject: dict[str, str]) -> dict[str, str]:
    return {subject["mrn"]: subject["surrogate"]}


def bgzf_blocks(data: bytes) -> list[bytes]:
    """Split a BGZF file into its blocks by their BSIZE fields (test-side, independent)."""
    blocks, at = [], 0
    while at < len(data):
        xlen = struct.unpack_from("<H", data, at + 10)[0]
        extra = data[at + 12:at + 12 + xlen]
        bsize = struct.unpack_from("<H", extra, extra.index(b"BC\x02\x00") + 4)[0]
        blocks.append(data[at:at + bsize + 1])
        at += bsize + 1
    return blocks


def bgzf(data: bytes, chunk: int) -> bytes:
    """A test-side BGZF writer: ``chunk`` bytes per block, so a header can end mid-block."""
    out = []
    for start in range(0, len(data), chunk):
        piece = data[start:start + chunk]
        compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
        cdata = compressor.compress(piece) + compressor.flush()
        out.append(struct.pack("<BBBBIBBHBBHH", 31, 139, 8, 4, 0, 0, 255, 6, 66, 67, 2,
                               len(cdata) + 25) + cdata + struct.pack("<II", zlib.crc32(piece),
                                                                       len(piece)))
    return b"".join(out) + BGZF_EOF


def vcf_body(path: Path) -> bytes:
    """The decompressed records of a VCF (everything after the #CHROM line)."""
    text = gzip.decompress(path.read_bytes())
    return text[text.index(b"\n", text.index(b"\n#CHROM") + 1) + 1:]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- VCF -------------------------------------------------------------------------------------


@pytest.mark.parametrize("index", [0, 1, 2])
def test_scrub_vcf_renames_samples_and_drops_identifying_meta(subjects: list[dict[str, str]],
                                                              tmp_path: Path, index: int) -> None:
    """GB/T 39725 §10.2 a, d; RARE §4.5: the MRN sample column becomes the surrogate and the
    ##patient_name/##bam_path lines go; records, and their bytes, are unchanged."""
    subject = subjects[index]
    src, dst = Path(subject["vcf"]), tmp_path / "out.vcf.gz"
    report = scrub_vcf(src, dst, sample_map(subject), KEEP_META)

    with pysam.VariantFile(str(dst)) as out, pysam.VariantFile(str(src)) as inp:
        assert list(out.header.samples) == [subject["surrogate"]]
        header = str(out.header)
        assert [str(rec) for rec in out] == [str(rec) for rec in inp]
    for line in header.splitlines():
        assert subject["name"] not in line and subject["mrn"] not in line
    assert "##patient_name" not in header and "##bam_path" not in header
    assert "##fileDate" in header and "##contig" in header  # kept by the policy list
    assert vcf_body(dst) == vcf_body(src)
    assert report.format == "vcf" and report.samples_renamed == 1
    assert report.header_lines_removed == 2 and report.records is None
    assert (report.input_sha256, report.bytes_in) == (sha256(src), src.stat().st_size)
    assert (report.output_sha256, report.bytes_out) == (sha256(dst), dst.stat().st_size)
    assert dst.read_bytes().endswith(BGZF_EOF)


def test_scrub_vcf_index_answers_region_queries(subjects: list[dict[str, str]],
                                                tmp_path: Path) -> None:
    """The .tbi built on the scrubbed file serves region queries like the original's."""
    subject = subjects[0]
    dst = tmp_path / "out.vcf.gz"
    scrub_vcf(Path(subject["vcf"]), dst, sample_map(subject), KEEP_META)
    assert Path(str(dst) + ".tbi").exists()
    with pysam.VariantFile(str(dst)) as out, pysam.VariantFile(subject["vcf"]) as inp:
        for contig in ("chr1", "chr2", "chrX"):
            assert [str(r) for r in out.fetch(contig)] == [str(r) for r in inp.fetch(contig)]


def test_scrub_vcf_copies_record_blocks_verbatim(big_vcf_subject: dict[str, str],
                                                 tmp_path: Path) -> None:
    """Only the header and the boundary block are re-encoded: every later block is the input's,
    byte for byte (constant memory, bcftools-reheader cost; RARE §4.5)."""
    src, dst = Path(big_vcf_subject["vcf"]), tmp_path / "big.vcf.gz"
    report = scrub_vcf(src, dst, sample_map(big_vcf_subject), MINIMAL_META, index=False)
    source_blocks = bgzf_blocks(src.read_bytes())
    out_blocks = bgzf_blocks(dst.read_bytes())
    assert len(source_blocks) > 4 and report.blocks_copied >= len(source_blocks) - 3
    tail = report.blocks_copied + 1  # + the end-of-file block
    assert out_blocks[-tail:] == source_blocks[-tail:]
    assert report.header_lines_removed == 4  # fileDate, source, patient_name, bam_path
    assert vcf_body(dst) == vcf_body(src)
    assert not Path(str(dst) + ".tbi").exists()
    with pysam.VariantFile(str(dst)) as out, pysam.VariantFile(str(src)) as inp:
        assert list(out.header.samples) == [big_vcf_subject["surrogate"]]
        assert sum(1 for _ in out) == sum(1 for _ in inp) == 5000


def test_when_the_header_spans_blocks_and_shares_one_with_records_then_records_survive(
        big_vcf_subject: dict[str, str], tmp_path: Path) -> None:
    """A header of many blocks (3,000 contigs) ending inside a block that also holds records."""
    text = gzip.decompress(Path(big_vcf_subject["vcf"]).read_bytes())
    extra = b"".join(b"##contig=<ID=alt%d,length=1000>\n" % i for i in range(3000))
    at = text.index(b"##contig")
    src = tmp_path / "wide.vcf.gz"
    src.write_bytes(bgzf(text[:at] + extra + text[at:], chunk=20_000))
    dst = tmp_path / "out.vcf.gz"
    report = scrub_vcf(src, dst, sample_map(big_vcf_subject), KEEP_META)
    assert vcf_body(dst) == vcf_body(src) and report.blocks_copied > 0
    with pysam.VariantFile(str(dst)) as out:
        assert len(out.header.contigs) == 3024 and list(out.header.samples) == ["PSN-0001"]
        assert sum(1 for _ in out.fetch("chr1")) > 0


def test_scrub_vcf_plain_text_is_streamed_line_by_line(subjects: list[dict[str, str]],
                                                       tmp_path: Path) -> None:
    subject = subjects[1]
    plain = tmp_path / "in.vcf"
    plain.write_bytes(gzip.decompress(Path(subject["vcf"]).read_bytes()))
    dst = tmp_path / "out.vcf"
    report = scrub_vcf(plain, dst, sample_map(subject), KEEP_META)
    text = dst.read_text(encoding="utf-8")
    assert subject["mrn"] not in text and subject["name"] not in text
    assert text.split("\n#CHROM", 1)[1].split("\n", 1)[1] == \
        plain.read_text(encoding="utf-8").split("\n#CHROM", 1)[1].split("\n", 1)[1]
    assert report.samples_renamed == 1 and report.blocks_copied == 0


def test_scrub_vcf_of_a_sites_only_file_needs_no_map(subjects: list[dict[str, str]],
                                                      tmp_path: Path) -> None:
    text = gzip.decompress(Path(subjects[0]["vcf"]).read_bytes()).decode("utf-8")
    sites = "".join(line if line.startswith("##") else "\t".join(line.split("\t")[:8]) + "\n"
                    for line in text.splitlines(keepends=True))
    src = tmp_path / "sites.vcf.gz"
    src.write_bytes(bgzf(sites.encode("utf-8"), chunk=4000))
    report = scrub_vcf(src, tmp_path / "out.vcf.gz", {}, KEEP_META)
    with pysam.VariantFile(str(tmp_path / "out.vcf.gz")) as out:
        assert list(out.header.samples) == [] and sum(1 for _ in out) == 200
    assert report.samples_renamed == 0 and report.header_lines_removed == 2


def test_when_a_sample_is_not_in_the_map_then_scrub_vcf_refuses(subjects: list[dict[str, str]],
                                                                tmp_path: Path) -> None:
    """GB/T 39725 §10.2 f: only the controller's map supplies surrogates; nothing is guessed."""
    subject = subjects[0]
    dst = tmp_path / "out.vcf.gz"
    with pytest.raises(ScrubError, match="sample not in the surrogate map") as caught:
        scrub_vcf(Path(subject["vcf"]), dst, {"MR00000000": "PSN-9999"}, KEEP_META)
    assert caught.value.stage == "deidentify"
    assert subject["mrn"] not in str(caught.value) and "§10.2 f" in str(caught.value)
    assert list(tmp_path.iterdir()) == []  # no output and no partial file


def test_when_the_bgzf_input_is_truncated_then_scrub_vcf_refuses(big_vcf_subject: dict[str, str],
                                                                 tmp_path: Path) -> None:
    data = Path(big_vcf_subject["vcf"]).read_bytes()
    cut = tmp_path / "cut.vcf.gz"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ScrubError, match=r"cut.vcf.gz: .*ends inside a compressed block "
                                         r"\(truncated\).*replace it with a complete copy"):
        scrub_vcf(cut, tmp_path / "out.vcf.gz", sample_map(big_vcf_subject), KEEP_META)
    cut.write_bytes(data[:-len(BGZF_EOF)])  # cut exactly at a block boundary
    with pytest.raises(ScrubError, match="end-of-file marker is missing"):
        scrub_vcf(cut, tmp_path / "out.vcf.gz", sample_map(big_vcf_subject), KEEP_META)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.vcf.gz"]


def test_when_a_kept_meta_line_names_the_subject_then_scrub_vcf_refuses(
        subjects: list[dict[str, str]], tmp_path: Path) -> None:
    """Fail closed: keeping ##bam_path (which holds the MRN-named path) is refused."""
    subject = subjects[0]
    plain = tmp_path / "in.vcf"
    text = gzip.decompress(Path(subject["vcf"]).read_bytes()).decode("utf-8")
    plain.write_text(text.replace("##reference=GRCh38",
                                  f"##reference=GRCh38\n##lims=/data/{subject['mrn']}/x.bam"),
                     encoding="utf-8")
    with pytest.raises(ScrubError, match="still contains an identifier") as caught:
        scrub_vcf(plain, tmp_path / "out.vcf", sample_map(subject), [*KEEP_META, "lims"])
    assert subject["mrn"] not in str(caught.value)


def test_scrub_vcf_renames_individuals_in_kept_sample_and_pedigree_lines(tmp_path: Path) -> None:
    """##SAMPLE and ##PEDIGREE name individuals: their values go through the map too."""
    src = tmp_path / "trio.vcf"
    src.write_text(
        "##fileformat=VCFv4.2\n##contig=<ID=chr1,length=1000>\n"
        '##SAMPLE=<ID=MR1,Assay=WGS,Description="proband, blood">\n'
        "##PEDIGREE=<ID=MR1,Father=MR2,Mother=MR3>\n"
        '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">\n'
        "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\tMR1\tMR2\tMR3\n"
        "chr1\t10\t.\tA\tG\t50\tPASS\t.\tGT\t0/1\t0/0\t1/1\n", encoding="utf-8")
    mapping = {"MR1": "PSN-1", "MR2": "PSN-2", "MR3": "PSN-3"}
    report = scrub_vcf(src, tmp_path / "out.vcf", mapping, [*KEEP_META, "PEDIGREE"])
    text = (tmp_path / "out.vcf").read_text(encoding="utf-8")
    assert '##SAMPLE=<ID=PSN-1,Assay=WGS,Description="proband, blood">' in text
    assert "##PEDIGREE=<ID=PSN-1,Father=PSN-2,Mother=PSN-3>" in text
    assert "MR" not in text and report.header_fields_replaced == 4
    assert report.samples_renamed == 3
    with pytest.raises(ScrubError, match="two samples map to the same surrogate"):
        scrub_vcf(src, tmp_path / "dup.vcf", {**mapping, "MR3": "PSN-1"}, KEEP_META)
    with pytest.raises(ScrubError, match="##PEDIGREE line names an individual that is not in"):
        scrub_vcf(src, tmp_path / "ped.vcf", {"MR1": "PSN-1", "MR3": "PSN-3"},
                  [*KEEP_META, "PEDIGREE"])


# --- BAM -------------------------------------------------------------------------------------


@pytest.mark.parametrize("index", [0, 1, 2])
def test_scrub_bam_keeps_records_and_scrubs_header(subjects: list[dict[str, str]], tmp_path: Path,
                                                   capfd: pytest.CaptureFixture[str],
                                                   index: int) -> None:
    """GB/T 39725 §10.2 a, d: RG SM (the MRN) -> surrogate, @PG CL and @CO (the patient's name)
    removed; every record identical; the output is a complete BGZF file (EOF marker)."""
    subject = subjects[index]
    src, dst = Path(subject["bam"]), tmp_path / "out.bam"
    report = scrub_bam(src, dst, sample_map(subject))
    with pysam.AlignmentFile(str(dst)) as out, pysam.AlignmentFile(str(src)) as inp:
        out.check_truncation()
        header = out.header.to_dict()
        text = str(out.header)
        assert [r.to_string() for r in out] == [r.to_string() for r in inp]
        assert out.references == inp.references and out.lengths == inp.lengths
        original = inp.header.to_dict()
        assert (header["SQ"], header["HD"]) == (original["SQ"], original["HD"])
    assert "EOF marker" not in capfd.readouterr().err
    assert subject["mrn"] not in text and subject["name"] not in text and "/data/" not in text
    assert "CO" not in header and all("CL" not in pg for pg in header["PG"])
    assert header["PG"] == [{"ID": "bwa", "PN": "bwa", "VN": "0.7.17-r1188"}]
    assert header["RG"] == [{"ID": subject["sample_id"], "SM": subject["surrogate"], "LB": "lib1",
                             "PL": "ILLUMINA"}]
    assert (report.header_lines_removed, report.samples_renamed, report.records) == (1, 1, None)
    assert report.header_fields_replaced == 3  # SM, LB (neutral code), PG CL
    assert report.blocks_copied > 0
    assert (report.input_sha256, report.output_sha256) == (sha256(src), sha256(dst))


def test_when_the_bam_header_ends_inside_a_block_then_records_survive(
        subjects: list[dict[str, str]], tmp_path: Path) -> None:
    """htslib flushes after the header, other writers may not: the boundary block is re-encoded."""
    subject = subjects[0]
    src = tmp_path / "mixed.bam"
    src.write_bytes(bgzf(gzip.decompress(Path(subject["bam"]).read_bytes()), chunk=5000))
    dst = tmp_path / "out.bam"
    report = scrub_bam(src, dst, sample_map(subject))
    with pysam.AlignmentFile(str(dst)) as out, pysam.AlignmentFile(str(src)) as inp:
        assert [r.to_string() for r in out] == [r.to_string() for r in inp]
        assert out.header.to_dict()["RG"][0]["SM"] == subject["surrogate"]
    assert report.blocks_copied > 0


def test_when_a_read_group_id_is_an_identifier_then_records_get_the_surrogate(
        subjects: list[dict[str, str]], tmp_path: Path) -> None:
    """If the map also covers the lab sample id used as @RG ID, each record's RG tag follows it;
    every other field of every record stays the same."""
    subject = subjects[0]
    mapping = {subject["mrn"]: subject["surrogate"], subject["sample_id"]: "PSN-S-0001"}
    src, dst = Path(subject["bam"]), tmp_path / "out.bam"
    report = scrub_bam(src, dst, mapping)
    with pysam.AlignmentFile(str(dst)) as out, pysam.AlignmentFile(str(src)) as inp:
        assert out.header.to_dict()["RG"][0]["ID"] == "PSN-S-0001"
        pairs = list(zip(out, inp, strict=True))
    assert all(o.get_tag("RG") == "PSN-S-0001" for o, _ in pairs)
    assert all(o.to_string().replace("PSN-S-0001", subject["sample_id"]) == i.to_string()
               for o, i in pairs)
    assert report.records == 300 and report.blocks_copied == 0
    with pytest.raises(ScrubError, match="replace_read_groups=True") as caught:
        scrub_bam(src, tmp_path / "refused.bam", mapping, replace_read_groups=False)
    assert subject["sample_id"] not in str(caught.value).split(":", 1)[1]
    assert not (tmp_path / "refused.bam").exists()


def test_when_the_sm_sample_is_not_in_the_map_then_scrub_bam_refuses(
        subjects: list[dict[str, str]], tmp_path: Path) -> None:
    subject = subjects[1]
    with pytest.raises(ScrubError, match="SM sample is not in the surrogate map") as caught:
        scrub_bam(Path(subject["bam"]), tmp_path / "out.bam", {"MR00000000": "PSN-1"})
    assert subject["mrn"] not in str(caught.value)
    assert list(tmp_path.iterdir()) == []


def test_when_the_bam_is_truncated_then_scrub_bam_refuses(subjects: list[dict[str, str]],
                                                          tmp_path: Path) -> None:
    subject = subjects[2]
    data = Path(subject["bam"]).read_bytes()
    cut = tmp_path / "cut.bam"
    cut.write_bytes(data[: len(data) - 1000])
    with pytest.raises(ScrubError, match=r"cut.bam: cannot de-identify this BAM file: .*truncated"):
        scrub_bam(cut, tmp_path / "out.bam", sample_map(subject))
    cut.write_bytes(gzip.compress(b"BAM\x01 but plain gzip", mtime=0))
    with pytest.raises(ScrubError, match="gzip but not BGZF.*recompress it with bgzip"):
        scrub_bam(cut, tmp_path / "out.bam", sample_map(subject))
    assert not (tmp_path / "out.bam").exists()


# --- FASTQ -----------------------------------------------------------------------------------


def fastq_records(data: bytes) -> list[tuple[bytes, bytes, bytes]]:
    lines = data.split(b"\n")
    return [(lines[i][1:], lines[i + 1], lines[i + 3]) for i in range(0, len(lines) - 1, 4)]


@pytest.mark.parametrize("index", [0, 1, 2])
def test_scrub_fastq_replaces_the_sample_token_of_every_read(subjects: list[dict[str, str]],
                                                             tmp_path: Path, index: int) -> None:
    """GB/T 39725 §10.2 a, d; RARE §4.5: `<sample_id>:<run>:<n>` -> `<surrogate>:<run>:<n>`."""
    subject = subjects[index]
    src, dst = Path(subject["fastq"]), tmp_path / "out.fastq.gz"
    report = scrub_fastq(src, dst, {subject["sample_id"]: subject["surrogate"]})
    before = fastq_records(gzip.decompress(src.read_bytes()))
    after = fastq_records(gzip.decompress(dst.read_bytes()))
    assert len(after) == len(before) == report.records == 300
    assert [(s, q) for _, s, q in after] == [(s, q) for _, s, q in before]
    prefix = subject["surrogate"].encode() + b":"
    assert all(name == prefix + old.split(b":", 1)[1] for (name, _, _), (old, _, _)
               in zip(after, before))
    assert subject["sample_id"].encode() not in gzip.decompress(dst.read_bytes())
    assert report.samples_renamed == 1 and report.blocks_copied == 0
    again = scrub_fastq(src, tmp_path / "again.fastq.gz",
                        {subject["sample_id"]: subject["surrogate"]})
    assert again.output_sha256 == report.output_sha256 == sha256(dst)  # deterministic gzip


def test_scrub_fastq_drops_comments_and_repeated_names(tmp_path: Path) -> None:
    src = tmp_path / "in.fq"
    src.write_bytes(b"@SMP1:RUN1:1 1:N:0:ACGT patient=Zhang\nACGT\n+SMP1:RUN1:1\nIIII\n"
                    b"@SMP1:RUN1:2\tBC:Z:AC\nAC\n+\nII")  # last record without a newline
    report = scrub_fastq(src, tmp_path / "out.fq", {"SMP1": "PSN-1"})
    assert (tmp_path / "out.fq").read_bytes() == \
        b"@PSN-1:RUN1:1\nACGT\n+\nIIII\n@PSN-1:RUN1:2\nAC\n+\nII\n"
    assert (report.records, report.header_fields_replaced) == (2, 3)


def test_when_a_read_token_is_not_in_the_map_or_the_fastq_is_cut_then_scrub_fastq_refuses(
        subjects: list[dict[str, str]], tmp_path: Path) -> None:
    """A name the map does not know passes the scrubber (CASAVA and MGI names carry no sample);
    if it is a subject's identifier after all, the last check over every output byte stops the
    release (seqlife.deidentify.residual)."""
    from seqlife.deidentify import residual

    subject = subjects[0]
    out = tmp_path / "unknown.fq.gz"
    scrub_fastq(Path(subject["fastq"]), out, {"SMP999999": "PSN-1"})
    assert residual.scan([("seq/x.fastq.gz", out, "fastq")],
                         residual.Scanner.of({subject["sample_id"]}))
    out.unlink()
    data = Path(subject["fastq"]).read_bytes()
    cut = tmp_path / "cut.fq.gz"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ScrubError, match="truncated or corrupt"):
        scrub_fastq(cut, tmp_path / "out.fq.gz", {subject["sample_id"]: "PSN-1"})
    plain = tmp_path / "cut.fq"
    plain.write_bytes(gzip.decompress(data)[:1000])
    with pytest.raises(ScrubError, match="ends inside read"):
        scrub_fastq(plain, tmp_path / "out.fq", {subject["sample_id"]: "PSN-1"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.fq", "cut.fq.gz"]


_TOKENS = ("SMP000001", "SMP000002", "LANEONLY")
_SURROGATES = {"SMP000001": "PSN-0001", "SMP000002": "PSN-0002", "LANEONLY": "PSN-0003"}
_fastq_record = st.integers(1, 30).flatmap(lambda n: st.tuples(
    st.sampled_from(_TOKENS),
    st.one_of(st.just(""), st.from_regex(r":[A-Z0-9]{1,6}(:[0-9]{1,5}){0,4}", fullmatch=True)),
    st.one_of(st.just(""), st.from_regex(r"[ \t][!-~ ]{0,20}", fullmatch=True)),
    st.text("ACGTN", min_size=n, max_size=n),
    st.text("".join(map(chr, range(33, 75))), min_size=n, max_size=n)))


@settings(max_examples=60, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(records=st.lists(_fastq_record, max_size=40), compressed=st.booleans())
def test_scrub_fastq_maps_names_and_preserves_content(records: list[tuple[str, ...]],
                                                      compressed: bool) -> None:
    """Property (RARE §4.5): any FASTQ keeps its reads, in order, with names mapped."""
    body = "".join(f"@{token}{rest}{comment}\n{seq}\n+\n{qual}\n"
                   for token, rest, comment, seq, qual in records).encode()
    with tempfile.TemporaryDirectory() as scratch:
        src, dst = Path(scratch) / "in.fq", Path(scratch) / "out.fq"
        src.write_bytes(gzip.compress(body, mtime=0) if compressed else body)
        report = scrub_fastq(src, dst, _SURROGATES)
        out = dst.read_bytes()
        assert out[:2] == (b"\x1f\x8b" if compressed else out[:2])
        out = gzip.decompress(out) if compressed else out
    assert report.records == len(records)
    expected = "".join(f"@{_SURROGATES[token]}{rest}\n{seq}\n+\n{qual}\n"
                       for token, rest, _, seq, qual in records).encode()
    assert out == expected
