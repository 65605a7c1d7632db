"""CRAM, BCF, gVCF and trio VCF in the core: intake checks, scrubbing, indexes, bombs (SEQ §5;
GB/T 39725 §10.2 a, d; §11.3.4.4 a; RARE §4.9). Files are written by htslib (tests/labfiles.py)."""

from __future__ import annotations

import gzip
import hashlib
import os
from pathlib import Path

import pyarrow as pa
import pysam
import pysam.bcftools
import pytest
from labfiles import to_bcf, write_cram, write_reference, write_trio

from seqlife import collect, reference
from seqlife.deidentify import sequencing
from seqlife.deidentify.seqerrors import ScrubError
from seqlife.deidentify.tables import load_deidentify_policy
from seqlife.exceptions import CollectError, MalformedFile
from seqlife.quality import load_quality_policy

SAMPLE, MRN = "LAB7731", "MR99000123"


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty reference cache that htslib is pointed at (and nothing on a network)."""
    monkeypatch.delenv("REF_PATH", raising=False)
    monkeypatch.delenv("REF_CACHE", raising=False)
    target = tmp_path / "cache"
    reference.use_cache(target)
    monkeypatch.setenv("REF_PATH", os.environ["REF_PATH"])
    monkeypatch.setenv("REF_CACHE", os.environ["REF_CACHE"])
    return target


@pytest.fixture
def cram(tmp_path: Path) -> tuple[Path, Path, dict[str, str]]:
    fasta = tmp_path / "ref" / "mini.fa"
    sequences = write_reference(fasta)
    path = tmp_path / "lab.cram"
    write_cram(path, fasta, sequences, SAMPLE, MRN, "Zhang San")
    return path, fasta, sequences


def test_the_reference_cache_names_each_sequence_by_its_md5(tmp_path: Path, cache: Path) -> None:
    """SAM §1.3 M5: the MD5 of the upper-case bases, what htslib looks for; gzip FASTA too."""
    fasta = tmp_path / "r.fa"
    sequences = write_reference(fasta)
    packed = tmp_path / "r.fa.gz"
    packed.write_bytes(gzip.compress(fasta.read_bytes().lower()))
    for source in (fasta, packed):
        found = reference.populate(source, cache, source.name)
        assert [(s.name, s.length) for s in found] == [(n, len(q)) for n, q in sequences.items()]
        for entry in found:
            expected = hashlib.md5(sequences[entry.name].encode()).hexdigest()
            assert entry.md5 == expected
            assert reference.cached_path(cache, expected).read_text() == sequences[entry.name]
    text = tmp_path / "lab.txt"
    text.write_text("sample\tfile\n")
    with pytest.raises(CollectError, match="not a FASTA"):
        reference.populate(text, cache, "lab.txt")


def test_a_cram_is_refused_until_its_reference_is_held_then_collected(
        cram: tuple[Path, Path, dict[str, str]], cache: Path) -> None:
    """SEQ §5: a CRAM decodes only with its reference; without it intake stops naming the file
    and what to declare, and htslib is never left to fetch it from a public server."""
    path, fasta, _ = cram
    with pytest.raises(CollectError, match="reference") as refused:
        collect.check_sequencing_file(path, "seq/lab.cram", ["cram"], references=cache)
    assert "seq/lab.cram" in refused.value.message and SAMPLE not in refused.value.message
    assert os.environ["REF_PATH"].startswith(str(cache))
    reference.populate(fasta, cache, "mini.fa")
    check = collect.check_sequencing_file(path, "seq/lab.cram", ["cram"], references=cache,
                                          column="bam")
    assert (check.format, check.records, check.inner_samples) == ("cram", 400, (SAMPLE,))
    with pytest.raises(CollectError, match="'vcf' column"):
        collect.check_sequencing_file(path, "seq/lab.cram", ["cram"], references=cache,
                                      column="vcf")


def test_a_scrubbed_cram_names_no_one_and_keeps_every_base(
        cram: tuple[Path, Path, dict[str, str]], cache: Path, tmp_path: Path) -> None:
    """GB/T 39725 §10.2 a, d: @RG ID/SM/LB/DS/CN, @PG CL, @CO, read names, RG/BC/MI tags: no
    sample ID or record number left; sequences, qualities, positions unchanged; the output is a
    CRAM that samtools accepts and that gets its own .crai."""
    path, fasta, _ = cram
    reference.populate(fasta, cache, "mini.fa")
    mapping = {SAMPLE: "S-0f3a", MRN: "P-77aa"}
    out = tmp_path / "out.cram"
    report = sequencing.scrub_cram(path, out, mapping)
    assert report.records == 400 and report.format == "cram"
    pysam.samtools.quickcheck(str(out))
    assert out.read_bytes()[6:26] == bytes(20)  # htslib's file id held the output's name
    with pysam.AlignmentFile(str(path), "rc") as before, pysam.AlignmentFile(str(out), "rc") as after:
        text = str(after.header)
        pairs = list(zip(before.fetch(until_eof=True), after.fetch(until_eof=True)))
        decoded = text + "\n".join(b.to_string() for _, b in pairs)
    assert SAMPLE not in decoded and MRN not in decoded and "Zhang" not in decoded
    assert "DS:" not in text and "CN:" not in text and "@CO" not in text and "CL:" not in text
    assert len(pairs) == 400
    for old, new in pairs:
        assert (new.query_sequence, new.query_qualities, new.reference_start, new.cigarstring) \
            == (old.query_sequence, old.query_qualities, old.reference_start, old.cigarstring)
        assert new.query_name == old.query_name.replace(SAMPLE, "S-0f3a")
        assert new.get_tag("RG") == "S-0f3a" and new.get_tag("BC").endswith("P-77aa")
    index = sequencing.index_output(out, "cram")
    assert index == Path(f"{out}.crai")
    with pysam.AlignmentFile(str(out), "rc", index_filename=str(index)) as indexed:
        assert sum(1 for _ in indexed.fetch("chr2")) > 0


def test_a_bcf_is_scrubbed_in_its_header_and_its_records_are_copied(tmp_path: Path) -> None:
    """GB/T 39725 §10.2 a, d: BCF sample names and ##PEDIGREE individuals replaced, non-kept
    meta lines dropped; every genotype stays on its sample; bcftools reads the output and its
    .csi answers a region query. A policy that drops a dictionary line is refused."""
    members = [SAMPLE, "LAB7732", "LAB7733"]
    vcf = tmp_path / "trio.g.vcf.gz"
    write_trio(vcf, members)
    bcf = tmp_path / "trio.bcf"
    to_bcf(vcf, bcf)
    keep = load_deidentify_policy()["vcf_keep_meta"]
    mapping = {member: f"S-{n}" for n, member in enumerate(members)}
    out = tmp_path / "out.bcf"
    report = sequencing.scrub_bcf(bcf, out, mapping, keep)
    assert report.samples_renamed == 3 and report.blocks_copied >= 0
    assert pysam.bcftools.view("-H", str(out))
    with pysam.VariantFile(str(bcf)) as before, pysam.VariantFile(str(out)) as after:
        assert list(after.header.samples) == ["S-0", "S-1", "S-2"]
        pedigree = [str(r) for r in after.header.records if r.key == "PEDIGREE"]
        assert pedigree and "Child=S-0" in pedigree[0] and SAMPLE not in str(after.header)
        assert not [r for r in after.header.records if r.key == "GATKCommandLine"]
        for old, new in zip(before, after):
            assert new.alts == old.alts
            assert [s["GT"] for s in new.samples.values()] == \
                [s["GT"] for s in old.samples.values()]
    assert SAMPLE.encode() not in gzip.decompress(out.read_bytes())
    assert sequencing.index_output(out, "bcf") == Path(f"{out}.csi")
    with pysam.VariantFile(str(out)) as indexed:
        assert len(list(indexed.fetch("chr2"))) == 1
    with pytest.raises(ScrubError, match="INFO"):
        sequencing.scrub_bcf(bcf, tmp_path / "x.bcf", mapping, [k for k in keep if k != "INFO"])
    with pytest.raises(ScrubError, match="not in the surrogate map"):
        sequencing.scrub_bcf(bcf, tmp_path / "x.bcf", {SAMPLE: "S-0"}, keep)


def test_a_gvcf_reference_block_passes_the_variant_format_rule() -> None:
    """VCF 4.2 §1.4.5; GB/T 39725 §11.3.4.7 e: symbolic alleles (<NON_REF>, <*>, <DEL>) are
    valid ALT values; a malformed one is not. The rule is the policy's regex."""
    import re

    rule = re.compile(load_quality_policy()["variant_alt"])
    for alt in ("<NON_REF>", "T,<NON_REF>", "<*>", "<DEL>", "<DUP:TANDEM>", "*", "."):
        assert rule.match(alt), alt
    for alt in ("<NON REF>", "<>", "t", "A,,C"):
        assert not rule.match(alt), alt


def bgzf(data: bytes) -> bytes:
    return b"".join(sequencing._bgzf_blocks(data)) + sequencing.BGZF_EOF


def test_a_bgzf_bomb_is_refused_from_its_block_headers(tmp_path: Path) -> None:
    """GB/T 39725 §11.3.4.4 a, §9.3: a VCF whose blocks declare far more data than the file
    holds is refused before htslib decodes it, with the policy's ratio; a real one passes."""
    ratio = float(collect.load_collect_policy()["max_decompression_ratio"])
    head = b"##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"
    line = b"chr1\t100\t.\tA\tC\t.\tPASS\t.\n"
    bomb = tmp_path / "bomb.vcf.gz"
    bomb.write_bytes(bgzf(head + line * int(ratio * 3 * (1 << 20) / len(line))))
    assert bomb.stat().st_size * ratio < collect.bgzf_inflated_size(bomb, "x", "VCF", 0, 1 << 62)
    with pytest.raises(MalformedFile, match="decompression bomb") as refused:
        collect.check_sequencing_file(bomb, "seq/bomb.vcf.gz", ["vcf"], max_ratio=ratio)
    assert "seq/bomb.vcf.gz" in refused.value.message
    fine = tmp_path / "fine.vcf.gz"
    fine.write_bytes(bgzf(head + line * 50))
    assert collect.check_sequencing_file(fine, "f", ["vcf"], max_ratio=ratio).records == 50
    with pytest.raises(MalformedFile, match="GiB"):
        collect.check_sequencing_file(fine, "f", ["vcf"], max_ratio=ratio, max_bytes=100)


def _sheet(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows)


def _consents(mrns: list[str], withdrawn: set[str]) -> pa.Table:
    import datetime as dt

    return pa.Table.from_pylist([{"mrn": m, "scope": "research", "signed_on": dt.date(2024, 1, 1),
                                  "withdrawn_on": dt.date(2025, 1, 1) if m in withdrawn else None}
                                 for m in mrns])


def test_a_trio_file_belongs_to_every_member_and_each_must_be_consented() -> None:
    """RARE §4.9; SEQ §5: a trio VCF listed on the three members' rows is one planned file whose
    inner samples may be any member; if a member withdrew, the shared file is refused (their
    genotypes are in it) with the file named and what to ask the lab."""
    policy = collect.load_collect_policy()
    members = [("LAB1", "MR1"), ("LAB2", "MR2"), ("LAB3", "MR3")]
    rows = [{"sample_id": s, "mrn": m, "assay": "WGS", "fastq": None, "bam": None,
             "vcf": f"seq/{s}.vcf.gz;seq/trio.vcf.gz"} for s, m in members]
    delivered = {"seq/trio.vcf.gz"} | {f"seq/{s}.vcf.gz" for s, _ in members}
    clinical = pa.Table.from_pylist([{"mrn": m} for _, m in members])
    plan = collect.plan_collection(_sheet(rows), _consents([m for _, m in members], set()),
                                   clinical, "research", policy, delivered)
    trio = [f for f in plan.files if f.path == "seq/trio.vcf.gz"]
    assert len(trio) == 1 and trio[0].sample_id == "LAB1" and len(trio[0].members) == 2
    check = collect.FileCheck("seq/trio.vcf.gz", "vcf", 1, "x", 1, ("LAB1", "LAB2", "LAB3"))
    collect.check_inner_sample(check, trio[0])
    with pytest.raises(CollectError, match="another patient"):
        collect.check_inner_sample(
            collect.FileCheck("seq/trio.vcf.gz", "vcf", 1, "x", 1, ("LAB1", "LAB9")), trio[0])
    with pytest.raises(CollectError, match="withdrew") as refused:
        collect.plan_collection(_sheet(rows), _consents([m for _, m in members], {"MR3"}),
                                clinical, "research", policy, delivered)
    assert "seq/trio.vcf.gz" in refused.value.message and "MR3" not in refused.value.message


# --- what an attack on the first version of this found (red team, issue 16) ----------------


def test_a_cram_bomb_is_refused_from_its_block_sizes(tmp_path: Path, cache: Path) -> None:
    """GB/T 39725 §11.3.4.4 a, §9.3: a CRAM of a few KB whose blocks declare megabytes of raw
    data (one long poly-A read compresses to nothing) is refused before htslib allocates it."""
    path = tmp_path / "bomb.cram"
    header = {"HD": {"VN": "1.6", "SO": "unsorted"}, "RG": [{"ID": "g", "SM": SAMPLE}]}
    with pysam.AlignmentFile(str(path), "wc", header=header) as out:
        for number in range(4):
            read = pysam.AlignedSegment(out.header)
            read.query_name, read.flag = f"r{number}", 4
            read.query_sequence = "A" * (1 << 20)
            out.write(read)
    declared = collect.cram_inflated_size(path, "x", 0, 1 << 62)
    assert declared > 4 << 20 > 100 * path.stat().st_size
    with pytest.raises(MalformedFile, match="decompression bomb") as refused:
        collect.check_sequencing_file(path, "seq/bomb.cram", ["cram"], max_ratio=2,
                                      references=cache)
    assert "seq/bomb.cram" in refused.value.message


def test_a_fastq_that_is_one_endless_line_is_refused_without_holding_it(tmp_path: Path) -> None:
    """§11.3.4.4 a: a gzip FASTQ with no line end stops at the record bound, not at its end."""
    path = tmp_path / "line.fastq.gz"
    path.write_bytes(gzip.compress(b"@r\n" + b"A" * (collect.FASTQ_MAX_RECORD + (8 << 20)),
                                   compresslevel=1))
    with pytest.raises(MalformedFile, match="longer than"):
        collect.check_sequencing_file(path, "seq/line.fastq.gz", ["fastq"], max_ratio=0)


def test_gzip_instead_of_bgzip_is_a_clear_refusal(tmp_path: Path) -> None:
    """SEQ §5: the most common lab slip (gzip, not bgzip) names the file and the fix."""
    plain = b"##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\nchr1\t1\t.\tA\tC\t.\t.\t.\n"
    path = tmp_path / "x.vcf.gz"
    path.write_bytes(gzip.compress(plain))
    with pytest.raises(MalformedFile, match="bgzip") as refused:
        collect.check_sequencing_file(path, "seq/x.vcf.gz", ["vcf"])
    assert "seq/x.vcf.gz" in refused.value.message


def test_an_m5_that_is_not_a_checksum_never_reaches_htslib_as_a_path(cache: Path) -> None:
    """A crafted ``M5:02d5../../x`` would make htslib read outside the cache: it counts as
    missing, so the CRAM is refused."""
    assert reference.missing([{"SN": "chr1", "M5": "02d5../../../outside/xx"}], cache) == ["chr1"]


def test_a_reference_on_one_endless_line_is_read_in_bounded_memory(tmp_path: Path,
                                                                   cache: Path) -> None:
    """A whole chromosome on one line is valid FASTA; it is streamed, and a size bound holds."""
    fasta = tmp_path / "one.fa.gz"
    sequence = "ACGT" * (3 << 20)
    fasta.write_bytes(gzip.compress(b">chrZ\n" + sequence.encode(), compresslevel=1))
    [found] = reference.populate(fasta, cache, "one.fa.gz")
    assert (found.length, found.md5) == (len(sequence), hashlib.md5(sequence.encode()).hexdigest())
    with pytest.raises(CollectError, match="more than"):
        reference.populate(fasta, cache, "one.fa.gz", max_bytes=1 << 20)


def test_the_last_scan_sees_an_identifier_however_software_wrote_it(tmp_path: Path) -> None:
    """GB/T 39725 §10.2 a, d: lower case, GB18030, percent-encoded, full-width, hex and a
    grouped phone number are the same identifier to the scan."""
    from urllib.parse import quote

    from seqlife.deidentify import residual

    name, phone = "张三丰", "13912345678"
    variants = [SAMPLE.lower().encode(), name.encode("gb18030"), quote(name).encode(),
                MRN.translate({ord(c): ord(c) + 0xFEE0 for c in "0123456789MR"}).encode(),
                MRN.encode().hex().upper().encode(), b"139-1234-5678", b"139 1234 5678"]
    for number, form in enumerate(variants):
        path = tmp_path / f"v{number}.txt"
        path.write_bytes(b"##reference=file:///data/" + form + b"/ref.fa\n")
        hits = residual.scan([("x", path, "index")], residual.Scanner.of({SAMPLE, name, MRN,
                                                                          phone}))
        assert hits, form


def test_a_read_group_named_after_sample_and_lane_is_renamed(tmp_path: Path) -> None:
    """Labs name read groups ``<sample>.L1``/``<sample>_L001``: the sample token is replaced,
    the lane kept, and every record's RG tag follows."""
    path, out = tmp_path / "lanes.bam", tmp_path / "out.bam"
    header = {"HD": {"VN": "1.6"}, "SQ": [{"SN": "chr1", "LN": 1000}],
              "RG": [{"ID": f"{SAMPLE}.L1", "SM": SAMPLE}, {"ID": f"{SAMPLE}_L002", "SM": SAMPLE}]}
    with pysam.AlignmentFile(str(path), "wb", header=header) as bam:
        for number, group in enumerate((f"{SAMPLE}.L1", f"{SAMPLE}_L002")):
            read = pysam.AlignedSegment(bam.header)
            read.query_name, read.flag = f"A00123:8:HF:1:1101:{number}:1", 4
            read.query_sequence, read.query_qualities = "ACGT", pysam.qualitystring_to_array("FFFF")
            read.set_tag("RG", group)
            bam.write(read)
    sequencing.scrub_bam(path, out, {SAMPLE: "S-9"})
    with pysam.AlignmentFile(str(out), check_sq=False) as bam:
        assert [g["ID"] for g in bam.header.to_dict()["RG"]] == ["S-9.L1", "S-9_L002"]
        assert [r.get_tag("RG") for r in bam.fetch(until_eof=True)] == ["S-9.L1", "S-9_L002"]
    assert SAMPLE.encode() not in gzip.decompress(out.read_bytes())
