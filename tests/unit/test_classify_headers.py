"""Every header field of a sequencing file is listed with what de-identification does with it,
read names are labelled by their platform layout, and a field nobody knows is never approved
silently (GB/T 39725 §10.2 a, d; SEQ §5)."""

from __future__ import annotations

import gzip
import io
from dataclasses import replace
from pathlib import Path

import pysam
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from seqlife.classify import labels as rules
from seqlife.classify.detectors import load_detectors
from seqlife.classify.headers import Header, read_header
from seqlife.deidentify.tables import load_deidentify_policy
from seqlife.exceptions import ClassificationError, HeaderFieldsUndecided, PolicyFileError
from seqlife.policy import Policy, Rule

POLICY = rules.load_classify_policy()
DETECTORS = load_detectors()

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


def labels_of(path: Path, file_format: str, policy: Policy = POLICY) -> dict[str, rules.FieldLabel]:
    with open(path, "rb") as handle:
        header = read_header(handle, file_format, path.name)
    return {f.field: f for f in rules.label_header(path.name, header, DETECTORS, policy)}


def expected_note(file_format: str, field: str, policy: Policy = POLICY) -> str:
    """The note the policy the code loads gives a field (never a literal of this test)."""
    handling = rules.header_handling(field, policy["sequencing_header_fields"][file_format])
    assert handling is not None, field
    return policy["sequencing_header_handling"][handling]["note"]


CASAVA = [f"A00123:8:H3KLMDSXX:1:1101:{1000 + i}:{2000 + i}" for i in range(5)]


@pytest.mark.parametrize("file_format", ["bam", "cram"])
def test_every_bam_and_cram_header_field_is_listed_with_its_handling(tmp_path: Path,
                                                                     file_format: str) -> None:
    """GB/T 39725 §10.2 a, d; SEQ §5: each @HD/@SQ/@RG/@PG key, @CO and (BAM) the read names and
    every text tag are labelled with what de-identification does; values never reach a label."""
    ref = reference(tmp_path) if file_format == "cram" else None
    path = write_alignments(tmp_path / f"x.{file_format}", SAM_HEADER, CASAVA, ref)
    found = labels_of(path, file_format)
    header_fields = {"HD.VN", "HD.SO", "SQ.SN", "SQ.LN", "SQ.AS", "RG.ID", "RG.SM", "RG.LB",
                     "RG.PU", "RG.PL", "RG.BC", "RG.DS", "RG.DT", "RG.CN", "PG.ID", "PG.PN",
                     "PG.VN", "PG.CL", "PG.PP", "PG.DS", "CO"}
    records = {"read_name", "tag.RG", "tag.BC", "tag.MI"} if file_format == "bam" else set()
    assert header_fields | records <= set(found) - {"sequence data"}
    if file_format == "cram":  # htslib adds the reference's checksum and location to @SQ
        assert {"SQ.M5", "SQ.UR"} <= set(found) and "read_name" not in found
    for name, label in found.items():
        if name != "sequence data":
            assert label.identifier != "unknown", name
            assert label.note.startswith(expected_note(file_format, name)), name
    assert found["RG.SM"].note.startswith("replaced by surrogate")
    assert found["RG.LB"].note == found["RG.PU"].note == "neutral code"
    assert found["SQ.LN"].note == found["RG.PL"].note == "kept: technical"
    assert found["CO"].note == found["PG.CL"].note == found["RG.DS"].note == "removed"
    assert found["sequence data"].grade == 4
    if file_format == "bam":
        assert found["read_name"].sampled == len(CASAVA) and "tag.NM" not in found
        assert "read names: illumina_casava_1.8 (5 of 5)" in found["read_name"].note
    text = " ".join(f"{label.field} {label.note}" for label in found.values())
    for secret in ("MR20230017", "Zhang", "zhangsan", "Ward", "2023-04-01", "A00123", "UMI-"):
        assert secret not in text


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


def test_a_bcf_header_is_listed_like_the_vcf_it_came_from(tmp_path: Path) -> None:
    """GB/T 39725 §10.2 a, d: BCF (BGZF, magic BCF\\2\\2, the VCF text inside) gives the same
    fields and handlings as the VCF: samples replaced, site-specific ## lines removed."""
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
    vcf, bcf = labels_of(tmp_path / "x.vcf.gz", "vcf"), labels_of(tmp_path / "x.bcf", "bcf")
    assert {k: (v.identifier, v.note) for k, v in vcf.items()} == \
        {k: (v.identifier, v.note) for k, v in bcf.items()}
    assert bcf["samples"].note.startswith(expected_note("bcf", "samples"))
    assert bcf["meta.patient_name"].note.startswith("removed")
    assert bcf["meta.contig"].note == "kept: technical"


def test_vcf_meta_keys_kept_are_the_ones_de_identification_keeps() -> None:
    """The classification table states what de-identification does: its kept ## keys (kept as
    they are, or with their individuals renamed) are deidentify.yaml vcf_keep_meta (plus
    ##fileformat, always kept); every other key is removed."""
    table = POLICY["sequencing_header_fields"]["vcf"]
    kept = {name.removeprefix("meta.") for name, handling in table.items()  # PEDIGREE: renamed
            if name.startswith("meta.") and handling in ("kept", "surrogate")}
    assert kept == set(load_deidentify_policy()["vcf_keep_meta"]) | {"fileformat"}
    assert rules.header_handling("meta.bam_path", table) == "removed"


def custom_bam(tmp_path: Path) -> Path:
    text = SAM_HEADER.replace("CN:Ward 7", "CN:Ward 7\txx:site-7") + "@XY\tnote:MR20230017\n"
    return write_alignments(tmp_path / "x.bam", text, CASAVA)


def test_a_custom_header_key_and_line_type_are_unknown(tmp_path: Path) -> None:
    """Fail closed (GB/T 39725 §10.2 a, d): a custom @RG key and a non-standard header line type
    are not in the handling table, so they are unknown, grade 4, for a steward to decide."""
    found = labels_of(custom_bam(tmp_path), "bam")
    assert found["RG.xx"].identifier == "unknown" and found["RG.xx"].grade == 4
    assert found["RG.xx"].note == "unknown @RG key: a steward must decide"
    assert found["XY"].note == "unknown header line type: a steward must decide"


def test_approval_waits_for_a_steward_decision_on_unknown_header_fields(tmp_path: Path) -> None:
    """Fail closed (GB/T 39725 §10.2 a, d): approval is refused, naming each FILE:FIELD and the
    --override to pass, until a steward decides each unknown header field with a reason; an
    unrecognised table column is left to de-identification, which stops on it."""
    found = labels_of(custom_bam(tmp_path), "bam")
    fields = list(found.values()) + [rules.FieldLabel("t.parquet", "c7", "unknown",
                                                      "medical_application", 3)]
    with pytest.raises(HeaderFieldsUndecided) as refused:
        rules.require_header_decisions(fields, {"x.bam"}, "cohort", 2, POLICY)
    message = refused.value.message
    assert refused.value.attrs["fields"] == ("x.bam:RG.xx", "x.bam:XY")  # not the table column
    assert "--override x.bam:RG.xx=4:free_text" in message and "--reason" in message
    assert "seqlife classify approve cohort --version 2" in message
    assert "site-7" not in message and "MR20230017" not in message
    decided = rules.apply_overrides(fields, [
        rules.Override("x.bam", "RG.xx", 4, "free_text", "site code, removed by de-identification"),
        rules.Override("x.bam", "XY", 4, None, "lab note line, removed by de-identification")],
        POLICY)
    rules.require_header_decisions(decided, {"x.bam"}, "cohort", 2, POLICY)


def test_the_handling_table_comes_from_the_policy(tmp_path: Path) -> None:
    """Labels follow the policy the code loads: changing a handling in sequencing_header_fields
    (or adding a key) changes the label, and no handling is written in the code."""
    path = custom_bam(tmp_path)
    rule = POLICY.rules["sequencing_header_fields"]
    table = {**rule.value["bam"], "RG.SM": "removed", "RG.xx": "kept"}
    changed = replace(POLICY, rules={**POLICY.rules, "sequencing_header_fields": Rule(
        {**rule.value, "bam": table}, rule.clause)})
    before, after = labels_of(path, "bam"), labels_of(path, "bam", changed)
    assert after["RG.SM"].note.startswith(expected_note("bam", "RG.SM", changed))
    assert after["RG.SM"].note.startswith("removed") and before["RG.SM"].note != after["RG.SM"].note
    assert before["RG.xx"].identifier == "unknown"
    assert after["RG.xx"].identifier == POLICY["sequencing_header_handling"]["kept"]["identifier"]


@pytest.mark.parametrize("rule, value, problem", [
    ("sequencing_header_fields", {"bam": {"RG.SM": "shredded"}}, "not in sequencing_header_handling"),
    ("read_name_layouts", {"broken": "(["}, "not a regular expression"),
    ("sequencing_header_handling", {"kept": {"identifier": "none", "category": "health_status",
                                             "grade": 2, "note": "kept"}}, "'unknown' entry"),
])
def test_a_handling_table_that_cannot_be_applied_is_refused_at_load(rule: str, value: object,
                                                                   problem: str) -> None:
    broken = replace(POLICY, rules={**POLICY.rules, rule: Rule(value, "test")})
    with pytest.raises(PolicyFileError, match=problem):
        rules.check_sequencing_rules(broken)


# --- read-name layouts -----------------------------------------------------------------------

_NUMBER = st.integers(0, 99999)
_INSTRUMENT = st.from_regex(r"[A-Za-z][A-Za-z0-9_-]{0,15}", fullmatch=True)
LAYOUTS = {
    "illumina_casava_1.8": st.builds(
        lambda i, run, cell, lane, tile, x, y, umi: f"{i}:{run}:{cell}:{lane}:{tile}:{x}:{y}{umi}",
        _INSTRUMENT, _NUMBER, st.from_regex(r"[A-Z0-9]{5,10}", fullmatch=True),
        st.integers(1, 8), st.integers(1101, 2678), _NUMBER, _NUMBER,
        st.sampled_from(["", ":ACGTACGT", ":ACGTNNAC+TTGCAACG"])),
    "illumina_legacy": st.builds(  # HWUSI-EAS100R:6:73:941:1973#0/1
        lambda i, lane, tile, x, y, index, read: f"{i}:{lane}:{tile}:{x}:{y}{index}{read}",
        _INSTRUMENT, st.integers(1, 8), _NUMBER, _NUMBER, _NUMBER,
        st.sampled_from(["", "#0", "#ACGTAC"]), st.sampled_from(["", "/1", "/2"])),
    "mgi_dnbseq": st.builds(  # V350012345L1C001R0010000001/1, E100012345L1C001R00100000001
        lambda cell, lane, column, row, n, read: f"{cell}L{lane}C{column:03d}R{row:03d}{n}{read}",
        st.from_regex(r"(V|E|CL|FP)[0-9]{9}", fullmatch=True), st.integers(1, 4),
        st.integers(1, 999), st.integers(1, 999), st.from_regex(r"[0-9]{7,8}", fullmatch=True),
        st.sampled_from(["", "/1", "/2"])),
    "sra": st.builds(  # SRR123456.1
        lambda archive, accession, spot, read: f"{archive}RR{accession}.{spot}{read}",
        st.sampled_from("SED"), st.integers(100000, 99999999), st.integers(1, 10**9),
        st.sampled_from(["", ".1", ".2"])),
    "sample_token": st.builds(  # the lab's <sample id>:<run>:<n>
        lambda token, run, n, read: f"{token}:{run}:{n}{read}",
        st.from_regex(r"[A-Z]{2,5}[0-9]{3,8}", fullmatch=True),
        st.from_regex(r"RUN[0-9]{4}", fullmatch=True), st.integers(1, 10**7),
        st.sampled_from(["", "/1"])),
}


@pytest.mark.parametrize("name, layout", [
    ("EAS139:136:FC706VJ:2:2104:15343:197393", "illumina_casava_1.8"),
    ("HWUSI-EAS100R:6:73:941:1973#0/1", "illumina_legacy"),
    ("V350012345L1C001R0010000001/1", "mgi_dnbseq"),
    ("E100012345L1C001R00100000001", "mgi_dnbseq"),
    ("SRR123456.1", "sra"),
    ("SMP000001:RUN1234:17", "sample_token"),
    ("Zhang San 1", None),
])
def test_documented_read_names_have_their_layout(name: str, layout: str | None) -> None:
    """The examples of each platform's documentation, and a name no platform writes."""
    assert rules.read_name_layout(name, POLICY) == layout


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_read_names_of_each_platform_are_labelled_by_their_layout(layout: str) -> None:
    """GB/T 39725 §10.2 a, d; SEQ §5: every name a platform writes is recognised as that
    platform's layout; the label names the layout, never a read name."""

    @given(st.lists(LAYOUTS[layout], min_size=1, max_size=20))
    def check(names: list[str]) -> None:
        assert all(rules.read_name_layout(name, POLICY) == layout for name in names)
        (label,) = [f for f in rules.label_header(
            "r.fq.gz", Header("fastq", {"read_name": tuple(names)}), DETECTORS, POLICY)
            if f.field == "read_name"]
        assert label.identifier != "unknown"
        assert f"read names: {layout} ({len(names)} of {len(names)})" in label.note
        assert not any(name in label.note for name in names)

    check()


@given(st.lists(st.text(alphabet="三李四 Mr.Wang13800138000#@/:").map(lambda t: f"张{t}"),
                min_size=1, max_size=10))
def test_read_names_no_layout_matches_are_unknown(names: list[str]) -> None:
    """Fail closed: names in no known layout (here a Chinese name, which no platform writes)
    make the read-name field unknown, grade 4; the note counts them, quoting none."""
    (label,) = [f for f in rules.label_header(
        "r.fq.gz", Header("fastq", {"read_name": tuple(names)}), DETECTORS, POLICY)
        if f.field == "read_name"]
    assert label.identifier == "unknown" and label.grade == 4
    assert label.note.startswith(f"unknown read-name layout ({len(names)} of {len(names)} names "
                                 "match no layout): a steward must decide")
    assert "张" not in label.note


def test_fastq_read_names_are_sampled_from_the_prefix(tmp_path: Path) -> None:
    """The first reads' names (not their comments) decide the layout: an MGI FASTQ."""
    reads = "".join(f"@V350012345L1C001R00{i:08d}/1 extra\nACGT\n+\nIIII\n" for i in range(50))
    path = tmp_path / "r.fq"
    path.write_text(reads)
    found = labels_of(path, "fastq")
    assert found["read_name"].sampled == 50
    assert "read names: mgi_dnbseq (50 of 50)" in found["read_name"].note


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
