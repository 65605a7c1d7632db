"""BAM records rewritten on the binary records (``scrub_bam``'s record path): every field but the
identifiers survives, no identifier byte is left, and a damaged record is refused by its number
(GB/T 39725 §10.2 a, d; SAM specification §4.2).

BAMs are written and read back by pysam, an implementation independent of the one under test;
the expected read names come from a longest-first regular expression, the rule of the FASTQ
renamer and of the pysam loop this path replaced.
"""

from __future__ import annotations

import array
import gzip
import hashlib
import re
import struct
import zlib
from pathlib import Path

import pysam
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from seqlife.deidentify import sequencing
from seqlife.deidentify.seqerrors import ScrubError
from seqlife.deidentify.sequencing import scrub_bam

SAMPLE, MRN = "SMP123456", "MR20000001"
MAPPING = {SAMPLE: "S-sample", MRN: "S-subject", "LIB7": "S-library"}


def write_bam(path: Path, reads: list[dict], *, read_group: str = SAMPLE,
              sort_order: str = "unsorted") -> Path:
    """A BAM with one read group (ID ``read_group``, SM the record number) and ``reads``."""
    header = {"HD": {"VN": "1.6", "SO": sort_order},
              "SQ": [{"SN": "chr1", "LN": 1_000_000}, {"SN": "chr2", "LN": 500_000}],
              "RG": [{"ID": read_group, "SM": MRN, "PL": "ILLUMINA"}]}
    with pysam.AlignmentFile(str(path), "wb", header=header) as out:
        for spec in reads:
            read = pysam.AlignedSegment(out.header)
            read.query_name = spec["name"]
            read.flag = spec.get("flag", 0)
            read.query_sequence = spec["seq"]
            if spec.get("qual", True):
                read.query_qualities = pysam.qualitystring_to_array(
                    "".join(chr(33 + (i * 7) % 41) for i in range(len(spec["seq"]))))
            if not read.flag & 4:
                read.reference_id, read.reference_start = spec["ref"], spec["pos"]
                read.cigarstring, read.mapping_quality = spec["cigar"], 60
            read.next_reference_id = spec.get("mate_ref", -1)
            read.next_reference_start = spec.get("mate_pos", -1)
            read.template_length = spec.get("tlen", 0)
            for tag, value, kind in spec.get("tags", ()):
                read.set_tag(tag, value, kind)
            out.write(read)
    return path


def rename(text: str, mapping: dict[str, str]) -> str:
    """The reference rule: every key replaced, the longest first where keys overlap."""
    pattern = re.compile("|".join(map(re.escape, sorted(mapping, key=len, reverse=True))))
    return pattern.sub(lambda match: mapping[match.group(0)], text)


def fields(read: pysam.AlignedSegment) -> tuple:
    """Everything of a record but its name and text tags."""
    return (read.flag, read.reference_id, read.reference_start, read.mapping_quality, read.bin,
            read.cigartuples, read.next_reference_id, read.next_reference_start,
            read.template_length, read.query_sequence,
            None if read.query_qualities is None else list(read.query_qualities))


def tags(read: pysam.AlignedSegment) -> list[tuple]:
    return [(tag, value.tolist() if isinstance(value, array.array) else value, kind)
            for tag, value, kind in read.get_tags(with_value_type=True)]


def expected_tags(read: pysam.AlignedSegment, mapping: dict[str, str],
                  groups: dict[str, str]) -> list[tuple]:
    """Text tags renamed, RG through the read-group map only; order and all else kept."""
    renamed = []
    for tag, value, kind in tags(read):
        if tag == "RG":
            value = groups.get(value, value)
        elif kind in ("Z", "H"):
            value = rename(value, mapping)
        renamed.append((tag, value, kind))
    return renamed


def lab_reads(count: int) -> list[dict]:
    """Reads as labs deliver them, with every kind of field a record can hold."""
    layouts = [f"{SAMPLE}:RUN1234:{{i}}", f"A00123:8:HXXXX:1:1101:{{i}}:77#{SAMPLE}/1",
               f"x{{i}}_{SAMPLE}_y", f"{SAMPLE}{SAMPLE}-{{i}}", "plain{i}", f"{MRN}.{{i}}",
               "m" * 240 + SAMPLE + "{i:05d}",  # 254 characters, the most BAM allows
               "n" * 240 + "LIB7{i:05d}"]  # 249 characters, 254 once renamed
    reads = []
    for i in range(count):
        length = 60 + i % 41  # odd and even lengths: the packed sequence has a half byte
        seq = "".join("ACGTN"[(i * 3 + j * 5) % 5] for j in range(length))
        read: dict = {"name": layouts[i % len(layouts)].format(i=i), "seq": seq,
                      "qual": i % 13 != 0, "tags": [("RG", SAMPLE, "Z")]}
        if i % 9 == 4:
            read["flag"] = 4  # unmapped: no reference, no CIGAR
        else:
            read.update(ref=i % 2, pos=1000 + 37 * i,
                        cigar=f"{length - 12}M2I10M" if i % 3 else f"{length}M",
                        flag=(16 if i % 4 == 1 else 0) | 1 | 64, mate_ref=i % 2,
                        mate_pos=1300 + 37 * i, tlen=350)
        read["tags"] += [("BC", "ACGTACGT", "Z"), ("NM", i % 5, "i"), ("XA", "c", "A"),
                         ("XF", 0.25 * i, "f"), ("XB", array.array("b", [i % 100, -3, 7]), None),
                         ("XS", array.array("H", [i, 65535]), None), ("XH", "1AE301", "H")]
        if i % 2:
            read["tags"].append(("MI", f"{SAMPLE}/{i}", "Z"))
        if i % 5 == 2:
            read["tags"].append(("XZ", f"pre{MRN}post{SAMPLE}", "Z"))
        reads.append(read)
    return reads


def sorted_by_position(reads: list[dict]) -> list[dict]:
    return sorted(reads, key=lambda r: (r.get("flag", 0) & 4, r.get("ref", 0), r.get("pos", 0)))


@pytest.fixture
def small_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    """Batches of 8 KiB after a 20-record sample: many batches, records cut between them."""
    monkeypatch.setattr(sequencing, "RECORD_BATCH", 8 << 10)
    monkeypatch.setattr(sequencing, "RECORDS_SAMPLED", 20)


@pytest.fixture
def shortcuts(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """For each batch, whether it took the one-key shortcut (else the general path)."""
    taken: list[bool] = []
    one_key = sequencing._RecordRewriter._one_key

    def spy(self: sequencing._RecordRewriter, *args: object) -> object:
        result = one_key(self, *args)  # type: ignore[arg-type]
        taken.append(result is not None)
        return result

    monkeypatch.setattr(sequencing._RecordRewriter, "_one_key", spy)
    return taken


def decompressed(path: Path) -> bytes:
    return gzip.decompress(path.read_bytes())


def bgzf(data: bytes, chunk: int = 64000) -> bytes:
    """Test-side BGZF writer: ``chunk`` bytes a block, then the EOF block."""
    out = []
    for at in range(0, len(data), chunk):
        piece = data[at:at + chunk]
        compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
        body = compressor.compress(piece) + compressor.flush()
        out.append(struct.pack("<BBBBIBBHBBHH", 31, 139, 8, 4, 0, 0, 255, 6, 66, 67, 2,
                               len(body) + 25) + body +
                   struct.pack("<II", zlib.crc32(piece), len(piece)))
    return b"".join(out) + sequencing.BGZF_EOF


def reblock(path: Path, chunk: int) -> Path:
    """The same BAM in blocks of ``chunk`` bytes: a small sample, then many batches, with
    records cut at block and batch boundaries."""
    path.write_bytes(bgzf(decompressed(path), chunk))
    return path


@pytest.mark.parametrize("batches", ["default", "small"])
def test_only_identifiers_change_in_every_field_of_every_record(
        tmp_path: Path, request: pytest.FixtureRequest, batches: str) -> None:
    """Names, RG/MI/XZ tags renamed; sequence, qualities, CIGAR, flags, positions, mates, B-array,
    integer, float, character and hex tags equal; tag order kept; no identifier byte anywhere;
    the output passes quickcheck and indexes (the input was coordinate-sorted)."""
    if batches == "small":
        request.getfixturevalue("small_batches")
    reads = sorted_by_position(lab_reads(3000))
    src = write_bam(tmp_path / "in.bam", reads, sort_order="coordinate")
    dst = tmp_path / "out.bam"
    report = scrub_bam(src, dst, MAPPING)
    groups = {SAMPLE: "S-sample"}
    with pysam.AlignmentFile(str(src)) as inp, pysam.AlignmentFile(str(dst)) as out:
        pairs = list(zip(inp.fetch(until_eof=True), out.fetch(until_eof=True), strict=True))
        assert out.header.to_dict()["RG"] == [{"ID": "S-sample", "SM": "S-subject",
                                               "PL": "ILLUMINA"}]
    for before, after in pairs:
        assert after.query_name == rename(before.query_name, MAPPING)
        assert fields(after) == fields(before)
        assert tags(after) == expected_tags(before, MAPPING, groups)
    assert max(len(before.query_name) for before, _ in pairs) == 254
    assert max(len(after.query_name) for _, after in pairs) == 254
    data = decompressed(dst)
    assert SAMPLE.encode() not in data and MRN.encode() not in data
    assert pysam.samtools.quickcheck(str(dst)) == ""
    pysam.index(str(dst))
    with pysam.AlignmentFile(str(dst)) as out:
        assert out.count("chr2", 0, 500_000) == sum(
            1 for r in reads if not r.get("flag", 0) & 4 and r["ref"] == 1)
    assert (report.records, report.blocks_copied) == (3000, 0)
    assert report.input_sha256 == hashlib.sha256(src.read_bytes()).hexdigest()
    assert report.output_sha256 == hashlib.sha256(dst.read_bytes()).hexdigest()
    assert report.bytes_out == dst.stat().st_size


def test_equal_inputs_give_equal_outputs_made_of_valid_bgzf_blocks(tmp_path: Path,
                                                                    small_batches: None) -> None:
    """mtime 0 and fixed block boundaries: the same input gives the same bytes; every block
    carries its size, CRC-32 and length, and the file ends with the EOF block."""
    src = write_bam(tmp_path / "in.bam", lab_reads(800))
    first, second = tmp_path / "a.bam", tmp_path / "b.bam"
    scrub_bam(src, first, MAPPING)
    scrub_bam(src, second, MAPPING)
    data = first.read_bytes()
    assert data == second.read_bytes()
    assert data.endswith(sequencing.BGZF_EOF)
    at = 0
    while at < len(data):
        assert data[at:at + 4] == b"\x1f\x8b\x08\x04" and data[at + 12:at + 16] == b"BC\x02\x00"
        size = struct.unpack_from("<H", data, at + 16)[0] + 1
        crc, length = struct.unpack_from("<II", data, at + size - 8)
        inflated = zlib.decompress(data[at + 18:at + size - 8], -15)
        assert (zlib.crc32(inflated), len(inflated)) == (crc, length)
        assert struct.unpack_from("<I", data, at + 4)[0] == 0  # mtime
        at += size


def test_identifier_bytes_inside_binary_fields_are_kept(tmp_path: Path, small_batches: None,
                                                         shortcuts: list[bool]) -> None:
    """A B-array whose bytes happen to spell a key is data, not a name: it is kept as it is
    (its batch leaves the one-key shortcut for the general path), and the names are renamed."""
    spelled = array.array("b", SAMPLE.encode())
    reads = [{"name": f"{SAMPLE}:R:{i}", "seq": "ACGT" * 10, "flag": 4,
              "tags": [("RG", SAMPLE, "Z"), ("XB", spelled, None)] if i == 333 else
              [("RG", SAMPLE, "Z")]} for i in range(600)]
    src = reblock(write_bam(tmp_path / "in.bam", reads, read_group=SAMPLE), 2000)
    dst = tmp_path / "out.bam"
    scrub_bam(src, dst, MAPPING)
    with pysam.AlignmentFile(str(dst)) as out:
        renamed = list(out.fetch(until_eof=True))
    assert [r.query_name for r in renamed] == [f"S-sample:R:{i}" for i in range(600)]
    assert [r.get_tag("XB").tolist() for r in renamed if r.has_tag("XB")] == \
        [list(SAMPLE.encode())]
    assert {r.get_tag("RG") for r in renamed} == {"S-sample"}
    assert shortcuts[0] is False and shortcuts.count(False) == 2 and shortcuts.count(True) > 3


def test_reads_longer_than_a_batch_are_sampled_and_rewritten(tmp_path: Path,
                                                              small_batches: None) -> None:
    """Long reads (here 30 kB records in 3 kB blocks, against 8 KiB batches): the sample waits
    for a whole record, and each record is carried over batches until complete."""
    reads = [{"name": f"{SAMPLE}:long:{i}", "seq": "ACGTTGCAN" * (1500 + 17 * i), "flag": 4,
              "tags": [("RG", SAMPLE, "Z"), ("MI", f"{SAMPLE}-{i}", "Z")]} for i in range(12)]
    src = reblock(write_bam(tmp_path / "in.bam", reads), 3000)
    dst = tmp_path / "out.bam"
    assert scrub_bam(src, dst, MAPPING).records == 12
    with pysam.AlignmentFile(str(src)) as inp, pysam.AlignmentFile(str(dst)) as out:
        for before, after in zip(inp.fetch(until_eof=True), out.fetch(until_eof=True),
                                 strict=True):
            assert after.query_name == rename(before.query_name, MAPPING)
            assert fields(after) == fields(before)
            assert tags(after) == expected_tags(before, MAPPING, {SAMPLE: "S-sample"})


def test_a_bam_without_records_is_rewritten_when_its_read_group_is_an_identifier(
        tmp_path: Path) -> None:
    src = write_bam(tmp_path / "in.bam", [])
    dst = tmp_path / "out.bam"
    report = scrub_bam(src, dst, MAPPING)
    assert (report.records, report.blocks_copied) == (0, 0)
    assert pysam.samtools.quickcheck(str(dst)) == ""
    with pysam.AlignmentFile(str(dst)) as out:
        assert list(out.fetch(until_eof=True)) == []
        assert out.header.to_dict()["RG"][0]["ID"] == "S-sample"


SEPARATORS = ":_-/#."


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(token=st.from_regex(r"[A-Z]{2,4}[0-9]{3,8}", fullmatch=True),
       parts=st.lists(st.from_regex(r"[A-Za-z0-9]{1,8}", fullmatch=True), min_size=1,
                      max_size=5),
       separators=st.lists(st.sampled_from(SEPARATORS), min_size=6, max_size=6),
       place=st.sampled_from(["start", "middle", "end", "twice"]))
def test_no_raw_token_survives_any_read_name_layout(tmp_path_factory: pytest.TempPathFactory,
                                                    token: str, parts: list[str],
                                                    separators: list[str], place: str) -> None:
    """Wherever the token sits in the name and whatever separates the name's fields, it is
    replaced and the rest of the name kept."""
    fields_ = [f"{part}{{i}}" if n == 0 else part for n, part in enumerate(parts)]
    where = {"start": [0], "middle": [len(fields_) // 2 + 1], "end": [len(fields_) + 1],
             "twice": [0, len(fields_) + 1]}[place]
    for position in where:
        fields_.insert(min(position, len(fields_)), token)
    layout = "".join(f + separators[n % len(separators)] for n, f in enumerate(fields_))[:-1]
    names = [layout.format(i=i) for i in range(60)]
    work = tmp_path_factory.mktemp("layout")
    src = write_bam(work / "in.bam", [{"name": name, "seq": "ACGTN", "flag": 4,
                                       "tags": [("RG", token, "Z"), ("MI", f"{token}:{i}", "Z")]}
                                      for i, name in enumerate(names)], read_group=token)
    mapping = {token: "S-x", MRN: "S-y"}
    scrub_bam(src, work / "out.bam", mapping)
    assert token.encode() not in decompressed(work / "out.bam")
    with pysam.AlignmentFile(str(work / "out.bam")) as out:
        assert [r.query_name for r in out.fetch(until_eof=True)] == \
            [rename(name, mapping) for name in names]


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(keys=st.lists(st.from_regex(r"[abz]{1,4}", fullmatch=True), min_size=1, max_size=4,
                     unique=True),
       names=st.lists(st.from_regex(r"[abz:]{1,12}", fullmatch=True), min_size=1,
                      max_size=6))
def test_overlapping_keys_are_replaced_leftmost_longest_in_every_batch(
        tmp_path_factory: pytest.TempPathFactory, keys: list[str], names: list[str]) -> None:
    """Keys inside, overlapping or repeating each other (``ab``, ``aba``, ``bab``, ``z``): every
    batch gives what a longest-first pattern gives, whether it takes the one-key shortcut or the
    general path."""
    mapping = {key: f"s{n}x" for n, key in enumerate(keys)} | {MRN: "S-y"}
    work = tmp_path_factory.mktemp("overlap")
    reads = [{"name": names[i % len(names)] + f"-{i % 7}", "seq": "AC", "flag": 4,
              "tags": [("XZ", names[(i + 1) % len(names)], "Z")]} for i in range(400)]
    src = reblock(write_bam(work / "in.bam", reads, read_group="rg"), 500)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sequencing, "RECORD_BATCH", 2 << 10)
        patch.setattr(sequencing, "RECORDS_SAMPLED", 5)
        scrub_bam(src, work / "out.bam", mapping)
    with pysam.AlignmentFile(str(work / "out.bam")) as out:
        got = [(r.query_name, r.get_tag("XZ")) for r in out.fetch(until_eof=True)]
    assert got == [(rename(r["name"], mapping), rename(r["tags"][0][1], mapping)) for r in reads]


def test_a_map_of_thousands_of_identifiers_finds_this_files_own(
        tmp_path: Path, small_batches: None, shortcuts: list[bool]) -> None:
    """The whole delivery's map (sample IDs and record numbers of everyone) is passed: this
    file's identifiers are found in names and tags, the one-key shortcut serving the batches
    that hold only the sample ID."""
    mapping = {f"SMP{n:06d}": f"S-{n}" for n in range(2000)} | \
        {f"MR{n:08d}": f"P-{n}" for n in range(2000)} | {MRN: "S-subject"}
    reads = [{"name": f"SMP000042:R:{i}", "seq": "ACGT", "flag": 4,
              "tags": [("RG", "SMP000042", "Z"),
                       ("XZ", "MR00000042" if 200 <= i < 260 else "x", "Z")]}
             for i in range(500)]
    src = reblock(write_bam(tmp_path / "in.bam", reads, read_group="SMP000042"), 2000)
    scrub_bam(src, tmp_path / "out.bam", mapping)
    with pysam.AlignmentFile(str(tmp_path / "out.bam")) as out:
        got = [(r.query_name, r.get_tag("RG"), r.get_tag("XZ")) for r in out.fetch(until_eof=True)]
    assert got == [(f"S-42:R:{i}", "S-42", "P-42" if 200 <= i < 260 else "x")
                   for i in range(500)]
    assert True in shortcuts and shortcuts.count(False) >= 2


def test_a_read_name_that_would_pass_254_characters_is_refused_by_its_number(
        tmp_path: Path) -> None:
    src = write_bam(tmp_path / "in.bam", [
        {"name": ("n" * 240 if i == 3 else "r") + f"{SAMPLE}", "seq": "AC", "flag": 4}
        for i in range(5)])
    with pytest.raises(ScrubError, match="record 4 would have a read name longer than 254 "
                                         "characters.*shorter surrogates") as caught:
        scrub_bam(src, tmp_path / "out.bam", {SAMPLE: "S-" + "x" * 20, MRN: "S-y"})
    assert SAMPLE not in str(caught.value)
    assert list(tmp_path.iterdir()) == [src]


# --- damaged records -------------------------------------------------------------------------


def record_offsets(data: bytes) -> list[int]:
    """Where each record starts in an inflated BAM (test-side walk)."""
    l_text = struct.unpack_from("<i", data, 4)[0]
    at = 8 + l_text
    n_ref = struct.unpack_from("<i", data, at)[0]
    at += 4
    for _ in range(n_ref):
        at += 4 + struct.unpack_from("<i", data, at)[0] + 4
    offsets = []
    while at < len(data):
        offsets.append(at)
        at += 4 + struct.unpack_from("<i", data, at)[0]
    return offsets


def damaged(tmp_path: Path, damage) -> Path:
    reads = [{"name": f"{SAMPLE}:R:{i}", "seq": "ACGTA", "flag": 4,
              "tags": [("NM", 1, "i"), ("MI", f"{SAMPLE}-{i}", "Z")]} for i in range(2000)]
    data = bytearray(decompressed(write_bam(tmp_path / "good.bam", reads)))
    damage(data, record_offsets(bytes(data)))
    path = tmp_path / "damaged.bam"
    path.write_bytes(bgzf(bytes(data)))
    return path


def tag_type(record: int, tag: bytes):
    """Damage: the type of ``tag`` in record ``record`` (1-based) becomes one BAM lacks."""
    def damage(data: bytearray, offsets: list[int]) -> None:
        start, end = offsets[record - 1], offsets[record]
        data[start + bytes(data[start:end]).rindex(tag) + 2] = ord("Q")
    return damage


@pytest.mark.parametrize("record, damage, problem", [
    (7, lambda d, o: d.__setitem__(o[6] + 12, 0), "has an empty read name"),
    (1500, lambda d, o: d.__setitem__(o[1499] + 12, 60), "read name"),
    (1200, lambda d, o: d.__setitem__(slice(o[1199] + 20, o[1199] + 24),
                                      struct.pack("<i", 5000)), "sequence or qualities"),
    (2000, lambda d, o: d.__setitem__(slice(o[1999], o[1999] + 4),
                                      struct.pack("<i", 9000)), "ends inside record 2000"),
    (900, lambda d, o: d.__setitem__(o[900] - 1, ord("x")), "text tag without its "
                                                            "terminating NUL"),
    (40, tag_type(40, b"NM"), "tag of a type BAM does not have"),
    (1800, tag_type(1800, b"MI"), "tag of a type BAM does not have"),
    (3, lambda d, o: d.__setitem__(slice(o[2], o[2] + 4), struct.pack("<i", 20)),
     "shorter than a record's fixed fields"),
    (1700, lambda d, o: d.__setitem__(slice(o[1699], o[1699] + 4), struct.pack("<i", 1 << 30)),
     "claims to be longer than 64 MiB"),
])
def test_a_damaged_record_is_refused_by_its_number_never_its_values(
        tmp_path: Path, record: int, damage, problem: str) -> None:
    src = damaged(tmp_path, damage)
    with pytest.raises(ScrubError, match=re.escape(problem)) as caught:
        scrub_bam(src, tmp_path / "out.bam", MAPPING)
    message = str(caught.value)
    assert f"record {record} " in message
    assert SAMPLE not in message and "R:" not in message
    assert not (tmp_path / "out.bam").exists() and not (tmp_path / "out.bam.part").exists()
