"""Collect core: formats recognised by content, every record parsed, tables held to their schema,
every subject linked to a covering consent (GB/T 39725 §7 a–b, §11.3.4.4 a; RARE §4.9; SEQ §5)."""

from __future__ import annotations

import gzip
import hashlib
import shutil
from datetime import date
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from seqlife import collect
from seqlife.classify.detectors import date_parser
from seqlife.exceptions import (
    CollectError,
    ConsentMissing,
    ConsentScopeError,
    MalformedFile,
    SchemaMismatch,
    UnknownFormat,
)

POLICY = collect.load_collect_policy()
RECORD = b"@r1\nACGTN\n+\nIIIII\n"


def fastq_gz(path: Path, body: bytes) -> Path:
    path.write_bytes(gzip.compress(body, mtime=0))
    return path


# --- formats ---------------------------------------------------------------------------------


def test_formats_are_recognised_by_content_not_name(cohort_template: Path, tmp_path: Path) -> None:
    """A VCF renamed .txt is still a VCF; a FASTQ named .bam is still a FASTQ."""
    vcf = next((cohort_template / "seq").glob("*.vcf.gz"))
    bam = next((cohort_template / "seq").glob("*.bam"))
    fq = next((cohort_template / "seq").glob("*.fastq.gz"))
    for source, name, expected in ((vcf, "x.txt", "vcf"), (bam, "y.dat", "bam"),
                                   (fq, "z.bam", "fastq")):
        target = tmp_path / name
        shutil.copy(source, target)
        assert collect.sniff_format(target, name) == expected


def test_unknown_content_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.fastq"
    path.write_text("not sequencing data\n")
    with pytest.raises(UnknownFormat, match="not FASTQ, BAM, CRAM, VCF"):
        collect.sniff_format(path, "notes.fastq")


def test_valid_fastq_counts_records_and_hashes_the_file(tmp_path: Path) -> None:
    path = fastq_gz(tmp_path / "a.fq.gz", RECORD * 3)
    check = collect.check_fastq(path, "a.fq.gz")
    assert check.records == 3
    assert check.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert check.size == path.stat().st_size


def test_fastq_records_split_across_read_blocks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(collect, "FASTQ_BLOCK", 7)  # every record straddles a block boundary
    path = fastq_gz(tmp_path / "a.fq.gz", RECORD * 50)
    assert collect.check_fastq(path, "a.fq.gz").records == 50


def test_multi_member_gzip_fastq_is_read_whole(tmp_path: Path) -> None:
    path = tmp_path / "cat.fq.gz"
    path.write_bytes(gzip.compress(RECORD * 2) + gzip.compress(RECORD * 3))
    assert collect.check_fastq(path, "cat.fq.gz").records == 5


@pytest.mark.parametrize("body, problem", [
    (RECORD + b"r2\nACGT\n+\nIIII\n", "record 2: header line does not start with '@'"),
    (RECORD + b"@r2\nACGT\n-\nIIII\n", "record 2: separator line"),
    (RECORD + b"@r2\nACXT\n+\nIIII\n", "record 2: sequence is empty or holds characters"),
    (RECORD + b"@r2\nACGT\n+\nIII\n", "record 2: sequence and quality lengths differ"),
    (RECORD + b"@r2\nACGT\n+\nII I\n", "record 2: quality string"),
    (RECORD + b"@r2\nACGT\n", "ends inside record 2"),
    (b"", "no records"),
])
def test_malformed_fastq_names_the_record_and_problem(tmp_path: Path, body: bytes, problem: str) -> None:
    path = fastq_gz(tmp_path / "bad.fq.gz", body)
    with pytest.raises(MalformedFile, match=problem):
        collect.check_fastq(path, "bad.fq.gz")


def test_truncated_gzip_fastq_is_refused(tmp_path: Path) -> None:
    data = gzip.compress(RECORD * 2000)
    path = tmp_path / "cut.fq.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(MalformedFile, match="truncated or corrupt"):
        collect.check_fastq(path, "cut.fq.gz")


@given(st.lists(st.tuples(st.text("ACGTN", min_size=1, max_size=30),
                          st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126),
                                  min_size=30, max_size=30)), min_size=1, max_size=40))
@settings(max_examples=60, deadline=None)
def test_any_wellformed_fastq_validates(tmp_path_factory: pytest.TempPathFactory,
                                        reads: list[tuple[str, str]]) -> None:
    body = b"".join(f"@read{i}\n{seq}\n+\n{qual[:len(seq)]}\n".encode()
                    for i, (seq, qual) in enumerate(reads))
    path = fastq_gz(tmp_path_factory.mktemp("fq") / "p.fq.gz", body)
    assert collect.check_fastq(path, "p.fq.gz").records == len(reads)


def test_bam_and_vcf_report_the_sample_named_inside(cohort_template: Path) -> None:
    samples = {row["sample_id"]: row["mrn"] for row in
               collect.read_table(cohort_template / "samples.csv", collect.load_schema("samples"),
                                  "samples.csv").to_pylist()}
    bam = next((cohort_template / "seq").glob("*.bam"))
    check = collect.check_alignments(bam, bam.name, "bam")
    assert check.format == "bam" and check.records > 0
    assert check.inner_samples == (samples[bam.name.split(".")[0]],)
    assert check.inner_samples[0] not in repr(check)  # identifiers never reach logs


@pytest.mark.parametrize("pattern", ["*.bam", "*.vcf.gz"])
def test_truncated_bam_and_vcf_are_refused(cohort_template: Path, tmp_path: Path, pattern: str) -> None:
    source = next((cohort_template / "seq").glob(pattern))
    data = source.read_bytes()
    cut = tmp_path / source.name
    cut.write_bytes(data[: len(data) - 40])
    with pytest.raises(MalformedFile, match="truncated"):
        collect.check_sequencing_file(cut, cut.name, ["bam", "vcf"])


def test_vcf_with_a_broken_record_is_refused(cohort_template: Path, tmp_path: Path) -> None:
    source = next((cohort_template / "seq").glob("*.vcf.gz"))
    lines = gzip.decompress(source.read_bytes()).split(b"\n")
    body = next(i for i, line in enumerate(lines) if line and not line.startswith(b"#"))
    lines[body] = b"chr1\tnot-a-position\t.\tA\tG\t.\tPASS\t.\tGT\t0/1"
    path = tmp_path / "broken.vcf"
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(MalformedFile, match="VCF"):
        collect.check_variants(path, "broken.vcf", "vcf")


def test_format_outside_policy_is_refused(tmp_path: Path) -> None:
    path = fastq_gz(tmp_path / "a.fq.gz", RECORD)
    with pytest.raises(CollectError, match="not accepted at intake"):
        collect.check_sequencing_file(path, "a.fq.gz", ["bam"])


# --- tables ----------------------------------------------------------------------------------


def test_table_with_missing_column_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "consents.csv"
    path.write_text("mrn,scope,signed_on\nMR00000001,research,2020-01-01\n")
    with pytest.raises(SchemaMismatch, match=r"missing column\(s\) \['withdrawn_on'\]"):
        collect.read_table(path, collect.load_schema("consents"), "consents.csv")


def test_unparseable_value_names_column_and_row_but_not_the_value(tmp_path: Path) -> None:
    path = tmp_path / "consents.csv"
    path.write_text("mrn,scope,signed_on,withdrawn_on\nMR00000001,research,2020-01-01,\n"
                    "MR00000002,research,13812345678,\n")
    with pytest.raises(SchemaMismatch) as caught:
        collect.read_table(path, collect.load_schema("consents"), "consents.csv")
    assert "signed_on" in caught.value.message
    assert "13812345678" not in caught.value.message


def test_required_value_missing_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "consents.csv"
    path.write_text("mrn,scope,signed_on,withdrawn_on\nMR00000001,,2020-01-01,\n")
    with pytest.raises(SchemaMismatch, match="required column 'scope' is empty in 1 row"):
        collect.read_table(path, collect.load_schema("consents"), "consents.csv")


def test_parquet_output_is_deterministic(tmp_path: Path) -> None:
    table = pa.table({"a": [1, 2], "b": ["x", "y"]})
    collect.write_parquet(table, tmp_path / "1.parquet")
    collect.write_parquet(table, tmp_path / "2.parquet")
    assert (tmp_path / "1.parquet").read_bytes() == (tmp_path / "2.parquet").read_bytes()


# --- consent and linking (GB/T 39725 §7 a–b; RARE §4.9) -----------------------------------------


SCOPES = POLICY["scenario_scopes"]


@pytest.mark.parametrize("records, scenario, expected", [
    ([], "research", "missing"),
    ([("clinical", None)], "research", "not_covered"),
    ([("research", None)], "research", "covered"),
    ([("broad", None)], "research", "covered"),
    ([("research", date(2024, 1, 1))], "research", "withdrawn"),
    ([("research", date(2024, 1, 1)), ("broad", None)], "research", "covered"),
    ([("clinical", None)], "clinical", "covered"),
])
def test_consent_status(records, scenario, expected) -> None:
    consents = [collect.ConsentRecord(scope, date(2020, 1, 1), withdrawn) for scope, withdrawn in records]
    assert collect.consent_status(consents, scenario, SCOPES) == expected


def _tables(consent_rows: list[tuple[str, str, str | None]]):
    samples = pa.table({"sample_id": ["SMP000001", "SMP000002"], "mrn": ["MR00000001", "MR00000002"],
                        "assay": ["WGS", "WGS"], "fastq": ["seq/a.fq.gz", "seq/b.fq.gz"],
                        "bam": [None, None], "vcf": [None, None]})
    consents = pa.table({
        "mrn": [r[0] for r in consent_rows], "scope": [r[1] for r in consent_rows],
        "signed_on": pa.array([date(2020, 1, 1)] * len(consent_rows), pa.date32()),
        "withdrawn_on": pa.array([date(2024, 1, 1) if r[2] else None for r in consent_rows],
                                 pa.date32())})
    clinical = pa.table({"mrn": ["MR00000001", "MR00000002"]})
    return samples, consents, clinical


def test_plan_links_files_and_leaves_out_withdrawn_subjects() -> None:
    samples, consents, clinical = _tables([("MR00000001", "research", None),
                                           ("MR00000002", "broad", "withdrawn")])
    plan = collect.plan_collection(samples, consents, clinical, "research", POLICY,
                                   {"seq/a.fq.gz", "seq/b.fq.gz"})
    assert [f.path for f in plan.files] == ["seq/a.fq.gz"]
    assert plan.excluded_subjects == {"MR00000002"}
    assert collect.keep_subjects(clinical, plan.included_subjects).num_rows == 1


def test_subject_without_consent_stops_the_plan_without_naming_the_subject() -> None:
    samples, consents, clinical = _tables([("MR00000001", "research", None)])
    with pytest.raises(ConsentMissing, match="GB/T 39725 §7 a") as caught:
        collect.plan_collection(samples, consents, clinical, "research", POLICY,
                                {"seq/a.fq.gz", "seq/b.fq.gz"})
    assert "MR00000002" not in caught.value.message


def test_consent_that_does_not_cover_the_use_stops_the_plan() -> None:
    samples, consents, clinical = _tables([("MR00000001", "research", None),
                                           ("MR00000002", "clinical", None)])
    with pytest.raises(ConsentScopeError, match="consented to 'clinical' use only"):
        collect.plan_collection(samples, consents, clinical, "research", POLICY,
                                {"seq/a.fq.gz", "seq/b.fq.gz"})


def test_delivered_file_not_in_the_sample_sheet_is_refused() -> None:
    samples, consents, clinical = _tables([("MR00000001", "research", None),
                                           ("MR00000002", "research", None)])
    with pytest.raises(CollectError, match="not listed in the sample sheet"):
        collect.plan_collection(samples, consents, clinical, "research", POLICY,
                                {"seq/a.fq.gz", "seq/b.fq.gz", "seq/stray.bam"})


def test_listed_file_not_delivered_is_refused() -> None:
    samples, consents, clinical = _tables([("MR00000001", "research", None),
                                           ("MR00000002", "research", None)])
    with pytest.raises(CollectError, match="not delivered"):
        collect.plan_collection(samples, consents, clinical, "research", POLICY, {"seq/a.fq.gz"})


def test_inner_sample_must_match_the_sample_sheet() -> None:
    planned = collect.PlannedFile("seq/a.bam", "bam", "SMP000001", "MR00000001")
    ok = collect.FileCheck("seq/a.bam", "bam", 1, "0" * 64, 1, ("MR00000001",))
    collect.check_inner_sample(ok, planned)
    wrong = collect.FileCheck("seq/a.bam", "bam", 1, "0" * 64, 1, ("MR00000009",))
    with pytest.raises(CollectError, match="may belong to another patient") as caught:
        collect.check_inner_sample(wrong, planned)
    assert "MR0000000" not in caught.value.message


def test_surrogate_is_keyed_and_stable() -> None:
    """GB/T 39725 §10.2 f: the surrogate cannot be recomputed without the controller's secret."""
    a = collect.subject_surrogate(b"k" * 32, "MR00000001")
    assert a == collect.subject_surrogate(b"k" * 32, "MR00000001")
    assert a != collect.subject_surrogate(b"j" * 32, "MR00000001")
    assert a.startswith("S-") and "MR00000001" not in a
    assert not any(ch.isdigit() for ch in a)  # never mistaken for a phone or ID number


@given(st.binary(min_size=32, max_size=32), st.text(min_size=1, max_size=20))
@settings(max_examples=300, deadline=None)
def test_surrogates_never_trip_the_identifier_guard(secret: bytes, key: str) -> None:
    """Regression: a hex surrogate once held 11 digits in a row and was refused as a phone number."""
    from seqlife.audit import contains_identifier

    assert not contains_identifier(f"subject:{collect.subject_surrogate(secret, key)}")


def test_content_digest_ignores_order_but_not_content() -> None:
    e1 = collect.ManifestEntry("a", "fastq", "fastq", 1, "1" * 64, 1, None, None)
    e2 = collect.ManifestEntry("b", "bam", "bam", 1, "2" * 64, 1, None, None)
    changed = collect.ManifestEntry("b", "bam", "bam", 1, "3" * 64, 1, None, None)
    assert collect.content_digest([e1, e2]) == collect.content_digest([e2, e1])
    assert collect.content_digest([e1, e2]) != collect.content_digest([e1, changed])


# --- a hospital's own columns (GB/T 39725 §11.3.4.4 a) ------------------------------------------

CLINICAL = collect.load_schema("clinical")
HOSPITAL = ["zyh", "xb", "csrq", "ryrq", "cyrq", "zd", "hb", "xm", "c9"]
LABELS = {"zyh": ("medical_record_no", "direct"), "xb": ("sex", "quasi"),
          "csrq": ("birth_date", "quasi"), "ryrq": ("date", "quasi"), "cyrq": ("date", "quasi"),
          "zd": ("icd10", "sensitive"), "hb": ("numeric_measure", "none"),
          "xm": ("person_name", "direct"), "c9": ("", "unknown")}


def test_a_map_is_proposed_by_role_in_schema_order_and_leaves_unknown_columns_undecided() -> None:
    order = {"ryrq": 1.0, "cyrq": 2.0}  # admission comes before discharge
    proposal = collect.propose_column_map(HOSPITAL, LABELS, CLINICAL, order)
    assert proposal.column_map.columns == {
        "zyh": "mrn", "xb": "sex", "csrq": "birth_date", "ryrq": "admission_date",
        "cyrq": "discharge_date", "zd": "diagnosis_icd10", "hb": "keep", "xm": "name"}
    assert list(proposal.undecided) == ["c9"] and proposal.missing == ()


@pytest.mark.parametrize("change, problem", [
    ({"zyh": "drop"}, r"required column\(s\) \['mrn'\]"),
    ({"xm": "keep"}, r"kept under their own names but their content looks personal"),
    ({"cyrq": "admission_date"}, r"filled twice"),
    ({"c9": "shoe_size"}, r"not columns of 'clinical'"),
    ({"extra": "drop"}, r"does not have"),
])
def test_a_steward_map_that_breaks_a_rule_is_refused_naming_it(change, problem) -> None:
    columns = {"zyh": "mrn", "xb": "sex", "csrq": "birth_date", "ryrq": "admission_date",
               "cyrq": "discharge_date", "zd": "diagnosis_icd10", "hb": "keep", "xm": "name",
               "c9": "drop", **change}
    with pytest.raises(SchemaMismatch, match=problem):
        collect.check_column_map(collect.ColumnMap("clinical", columns), HOSPITAL, CLINICAL,
                                 LABELS, "clinical.csv")


def test_conform_parses_text_as_declared_types_and_normalises_codes() -> None:
    table = pa.table({"zyh": ["ZY0001", "ZY0002"], "xb": ["男", "2"], "csrq": ["1956/3/7", "19800102"],
                      "ryrq": ["2020年1月2日", "2021-03-04 08:00"], "zd": ["I10", "E11.9"],
                      "hb": ["135", "121.5"]})
    columns = {"zyh": "mrn", "xb": "sex", "csrq": "birth_date", "ryrq": "admission_date",
               "zd": "diagnosis_icd10", "hb": "keep"}
    out = collect.conform(table, collect.ColumnMap("clinical", columns), CLINICAL, "c.csv",
                          date_parser())
    assert out.column("sex").to_pylist() == ["M", "F"]
    assert out.column("birth_date").to_pylist() == [date(1956, 3, 7), date(1980, 1, 2)]
    assert out.column("admission_date").to_pylist() == [date(2020, 1, 2), date(2021, 3, 4)]
    assert out.column_names[-1] == "hb"  # kept under its own name, after the schema's columns
    bad = table.set_column(2, "csrq", pa.array(["1956/3/7", "13812345678"]))
    with pytest.raises(SchemaMismatch, match="'birth_date': 1 value") as caught:
        collect.conform(bad, collect.ColumnMap("clinical", columns), CLINICAL, "c.csv",
                        date_parser())
    assert "13812345678" not in caught.value.message


_SAMPLE_IDS = st.from_regex(r"[A-Z]{2,4}-?[0-9]{4,8}", fullmatch=True)


@given(sample_id=_SAMPLE_IDS, mrn=st.from_regex(r"[A-Z]{0,2}[0-9]{6,10}", fullmatch=True),
       lane=st.integers(1, 8), lower=st.booleans())
@settings(max_examples=200, deadline=None)
def test_stored_names_carry_codes_not_sample_ids_or_record_numbers(
        sample_id: str, mrn: str, lane: int, lower: bool) -> None:
    """SEQ §5; GB/T 39725 §10.1 c (issue 17): a delivered path keeps its folders, lane, read
    and extension, and loses every sample ID and record number it holds, in any letter case."""
    assume(sample_id not in mrn and mrn not in sample_id)
    secret = b"k" * 32
    codes = {sample_id: collect.sample_code(secret, sample_id),
             mrn: collect.subject_surrogate(secret, mrn)}
    name = f"{sample_id}_{mrn}_S1_L00{lane}_R2_001.fastq.gz"
    path = f"run7/{mrn}/{name.lower() if lower else name}"
    coded = collect.coded_path(path, codes)
    assert sample_id.lower() not in coded.lower() and mrn.lower() not in coded.lower()
    assert coded.startswith("run7/S-")
    assert coded.lower().endswith(f"_s1_l00{lane}_r2_001.fastq.gz")
    assert codes[sample_id] in coded and coded.count(codes[mrn]) == 2


def test_a_sample_id_inside_another_is_coded_whole() -> None:
    """Longest first: SMP12 is not coded as SMP1 followed by '2'."""
    codes = {"SMP1": "S-one", "SMP12": "S-twelve"}
    assert collect.coded_path("seq/SMP12.bam;seq/SMP1.bam", codes) == \
        "seq/S-twelve.bam;seq/S-one.bam"
    assert collect.coded_path("seq/x.bam", {}) == "seq/x.bam"


def test_a_refusal_is_recorded_with_codes_and_told_with_the_lab_name() -> None:
    """The person at the terminal reads the delivered name; the audit trail and the
    orchestrator's run history (``str``) get the coded one."""
    refused = CollectError("seq/LAB7731.bam: not a valid BAM file", path="seq/LAB7731.bam")
    refused.record_as(collect.coded_path(refused.message, {"LAB7731": "S-abc"}))
    assert refused.message.startswith("seq/LAB7731.bam") and str(refused).startswith("seq/S-abc")


def test_prefetched_blocks_arrive_in_order_and_errors_reach_the_reader() -> None:
    """The reading thread of FASTQ intake (issue 18): blocks in order, then end of stream; an
    error while inflating is raised to the parser; close() stops a thread blocked on a full
    queue, so the file under it can be closed."""
    import io
    import threading

    data = bytes(range(256)) * 1000
    reader = collect.Prefetched(io.BytesIO(data), 1000, depth=2)
    assert b"".join(iter(lambda: reader.read(), b"")) == data and reader.read() == b""
    reader.close()

    class Failing(io.BytesIO):
        def read(self, size: int = -1) -> bytes:
            if self.tell() >= 3000:
                raise EOFError("compressed stream ended early")
            return super().read(size)

    broken = collect.Prefetched(Failing(data), 1000)
    with pytest.raises(EOFError):
        while broken.read():
            pass
    broken.close()

    stalled = collect.Prefetched(io.BytesIO(data), 10, depth=1)  # never read: the queue fills
    stalled.read()
    stalled.close()
    assert not any(t.name == "seqlife-prefetch" and t.is_alive() for t in threading.enumerate())


def test_a_fastq_bomb_is_refused_before_the_parser_reaches_its_end(tmp_path: Path) -> None:
    """SEQ §5 intake bound, read from the policy: a FASTQ.gz inflating past
    ``max_decompression_ratio`` times what was read (past the first MiB) or past
    ``max_decompressed_gib`` is refused; an ordinary file under the same bounds passes."""
    ratio = float(POLICY["max_decompression_ratio"])
    record = b"@r\n" + b"A" * 150 + b"\n+\n" + b"I" * 150 + b"\n"
    bomb = tmp_path / "bomb.fastq.gz"
    bomb.write_bytes(gzip.compress(record * int(ratio * 4 * (1 << 20) / len(record)), 9))
    with pytest.raises(MalformedFile, match="decompression bomb"):
        collect.check_fastq(bomb, "seq/bomb.fastq.gz", max_ratio=ratio)
    with pytest.raises(MalformedFile, match="decompression bomb"):
        collect.check_fastq(bomb, "seq/bomb.fastq.gz", max_bytes=1 << 20)
    fine = tmp_path / "fine.fastq.gz"
    fine.write_bytes(gzip.compress(record * 1000))
    assert collect.check_fastq(fine, "f", max_ratio=ratio).records == 1000
