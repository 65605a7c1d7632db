"""Collect: recognise, validate and link what a hospital or lab delivers, before anything is stored.

Every file is parsed as what its content says it is (FASTQ, BAM, VCF) and every table is read
against its declared schema (GB/T 39725 §11.3.4.4 a). Each subject's data is linked to an
informed-consent record that covers the use (GB/T 39725 §7 a–b; RARE §4.9). All of it is decided
here, as plain functions; storing and registering is the task layer's job.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import hmac
import json
import math
import queue
import re
import threading
import zlib
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import BinaryIO, Callable, Iterable, Iterator, Mapping, Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pysam
import yaml
from isal import igzip, isal_zlib

from seqlife.exceptions import (
    CollectError,
    ConsentMissing,
    ConsentScopeError,
    MalformedFile,
    SchemaMismatch,
    UnknownFormat,
)
from seqlife import reference
from seqlife.classify.headers import read_itf8, read_ltf8
from seqlife.policy import DATA_CATALOG, Policy, load_policy
from seqlife.tableio import read_table_file

REQUIRED_RULES = frozenset(
    {"scenario_scopes", "on_withdrawn", "sequencing_formats", "tables", "raw_zone", "checksum",
     "index_suffixes", "max_decompression_ratio", "max_decompressed_gib",
     "table_encodings"})
SCHEMA_DIR = DATA_CATALOG / "schemas"
HASH_CHUNK = 1 << 16  # 64 KiB reads: hashlib's sweet spot on this machine (PERF-ANCHORS 2e)
FASTQ_BLOCK = 4 << 20
#: A FASTQ record longer than this is refused (a long read is < 10 MiB with its qualities): the
#: incomplete record is held in memory, so an endless line must not be.
FASTQ_MAX_RECORD = 64 << 20
_VALID_BASES = b"ACGTNacgtn"
_VALID_QUALITY = bytes(range(33, 127))
_ARROW_TYPES = {"string": pa.string(), "date": pa.date32(), "float64": pa.float64(),
                "int64": pa.int64()}

Progress = Callable[[int], None]


def load_collect_policy() -> Policy:
    return load_policy("collect", REQUIRED_RULES)


# --- formats ---------------------------------------------------------------------------------


def sniff_format(path: Path, label: str) -> str:
    """Name the format from the first bytes of content, never from the file name."""
    with open(path, "rb") as handle:
        head = handle.read(1 << 16)
    if head[:2] == b"\x1f\x8b":
        try:
            head = zlib.decompressobj(31).decompress(head, 4096)
        except zlib.error as exc:
            raise MalformedFile(label, "gzip", "corrupt compressed header") from exc
    if head.startswith(b"BAM\x01"):
        return "bam"
    if head.startswith(b"CRAM"):
        return "cram"
    if head.startswith(b"BCF\x02"):
        return "bcf"
    if head.startswith(b"##fileformat=VCF"):
        return "vcf"
    if head.startswith(b"@") and not head[:4] in (b"@HD\t", b"@SQ\t", b"@RG\t"):
        return "fastq"
    raise UnknownFormat(label)


class _HashingReader:
    """Raw reader that hashes every byte it hands on, so one pass both hashes and parses."""

    def __init__(self, raw: BinaryIO, progress: Progress | None,
                 sink: Callable[[bytes], None] | None = None) -> None:
        self.raw, self.progress, self.sink = raw, progress, sink
        self.digest, self.size = hashlib.sha256(), 0

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self._seen(data)
        return data

    def readinto(self, buffer: bytearray | memoryview) -> int:
        """ISA-L's inflater fills its own buffer (no copy per read)."""
        count = self.raw.readinto(buffer)  # type: ignore[attr-defined]
        with memoryview(buffer) as view:
            self._seen(view[:count])
        return count

    def _seen(self, data: bytes | memoryview) -> None:
        self.digest.update(data)
        self.size += len(data)
        if self.sink is not None and data:
            self.sink(data)
        if self.progress and data:
            self.progress(len(data))


def hash_file(path: Path, progress: Progress | None = None) -> tuple[str, int]:
    """SHA-256 and size in constant memory."""
    digest, size = hashlib.sha256(), 0
    buffer = bytearray(HASH_CHUNK)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as handle:
        while count := handle.readinto(buffer):
            digest.update(view[:count])
            size += count
            if progress:
                progress(count)
    return digest.hexdigest(), size


@dataclass(frozen=True)
class FileCheck:
    """What validation learned about one file. ``inner_samples`` never leaves the process."""

    path: str
    format: str
    size: int
    sha256: str
    records: int
    inner_samples: tuple[str, ...] = field(default=(), repr=False)
    read_names: tuple[str, ...] = field(default=(), repr=False)  # the first FASTQ read names


def _first_bad(items: list[bytes], ok: Callable[[bytes], bool]) -> int:
    return next(index for index, item in enumerate(items) if not ok(item))


def _check_fastq_lines(lines: list[bytes], label: str, done: int) -> None:
    """Check whole records at C speed; look for the first bad record only when one is bad."""
    if not lines:
        return
    heads, seqs, pluses, quals = lines[0::4], lines[1::4], lines[2::4], lines[3::4]
    count = len(heads)

    def refuse(items: list[bytes], ok: Callable[[bytes], bool], problem: str) -> None:
        raise MalformedFile(label, "FASTQ", f"record {done + _first_bad(items, ok) + 1}: {problem}")

    joined = b"\n".join(heads)
    if joined[:1] != b"@" or joined.count(b"\n@") != count - 1 or min(map(len, heads)) < 2:
        refuse(heads, lambda h: h[:1] == b"@" and len(h) > 1, "header line does not start with '@'")
    joined = b"\n".join(pluses)
    if joined[:1] != b"+" or joined.count(b"\n+") != count - 1:
        refuse(pluses, lambda p: p[:1] == b"+", "separator line does not start with '+'")
    seq_lengths = list(map(len, seqs))
    if min(seq_lengths) == 0 or b"".join(seqs).translate(None, _VALID_BASES):
        refuse(seqs, lambda s: bool(s) and not s.translate(None, _VALID_BASES),
               "sequence is empty or holds characters other than ACGTN")
    if b"".join(quals).translate(None, _VALID_QUALITY):
        refuse(quals, lambda q: not q.translate(None, _VALID_QUALITY),
               "quality string holds characters outside Phred+33")
    if seq_lengths != list(map(len, quals)):
        bad = next(i for i, (seq, qual) in enumerate(zip(seqs, quals)) if len(seq) != len(qual))
        raise MalformedFile(label, "FASTQ", f"record {done + bad + 1}: sequence and quality "
                            "lengths differ")


class FastqBlocks:
    """Split a FASTQ byte stream into lists of lines holding whole 4-line records, one read block
    at a time (constant memory). ``carry`` is the incomplete rest so far; ``tail()`` is what is
    left when the stream ends (complete records without a final newline, or a truncated one)."""

    def __init__(self, stream: BinaryIO, block_size: int | None = None) -> None:
        self.stream, self.block_size = stream, block_size or FASTQ_BLOCK
        self.carry = b""
        self.consumed = 0  # bytes of the stream read so far (decompressed)

    def __iter__(self) -> Iterator[list[bytes]]:
        while block := self.stream.read(self.block_size):
            self.consumed += len(block)
            lines = (self.carry + block).split(b"\n")
            self.carry = lines.pop()
            complete = len(lines) - len(lines) % 4
            if complete < len(lines):
                self.carry = b"\n".join(lines[complete:] + [self.carry])
                del lines[complete:]
            yield lines

    def tail(self) -> list[bytes]:
        lines = self.carry.split(b"\n") if self.carry else []
        if lines and lines[-1] == b"":
            lines.pop()
        return lines


class Prefetched:
    """Blocks of ``stream`` read on a second thread while the caller parses the ones before:
    inflating (ISA-L), hashing (hashlib) and sealing (OpenSSL) release the GIL, so the second
    core does them while the first parses. At most ``depth`` blocks wait in memory; an error on
    the reading thread is raised by the next :meth:`read`."""

    def __init__(self, stream: BinaryIO, block_size: int, depth: int = 3) -> None:
        self._queue: queue.Queue[bytes | BaseException] = queue.Queue(depth)
        self._stop = threading.Event()
        self._ended = False
        self._thread = threading.Thread(target=self._fill, args=(stream, block_size),
                                        name="seqlife-prefetch", daemon=True)
        self._thread.start()

    def _fill(self, stream: BinaryIO, block_size: int) -> None:
        try:
            while not self._stop.is_set():
                block = stream.read(block_size)
                self._put(block)
                if not block:
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the reading thread as is
            self._put(exc)

    def _put(self, item: bytes | BaseException) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def read(self, _size: int = -1) -> bytes:
        if self._ended:
            return b""
        item = self._queue.get()
        if isinstance(item, BaseException):
            self._ended = True
            raise item
        self._ended = not item
        return item

    def close(self) -> None:
        """Stop the reading thread (it may be blocked on a full queue) and wait for it, so the
        file under it can be closed."""
        self._stop.set()
        while self._thread.is_alive():
            with contextlib.suppress(queue.Empty):
                self._queue.get_nowait()
            self._thread.join(0.05)


def check_fastq(path: Path, label: str, progress: Progress | None = None,
                max_ratio: float = 0.0, max_bytes: int = 1 << 62,
                sink: Callable[[bytes], None] | None = None) -> FileCheck:
    """Parse every record of a FASTQ (plain or gzip, multi-member; inflated with ISA-L) while
    hashing the file.

    With ``max_ratio``, a gzip stream that inflates to more than that many times the bytes read
    so far (past the first MiB) is refused: a decompression bomb never reaches the parser's end.
    ``sink`` receives every byte of the file as it is read (intake seals it in the same pass).
    """
    with open(path, "rb") as raw:
        hashing = _HashingReader(raw, progress, sink)
        is_gzip = raw.read(2) == b"\x1f\x8b"
        raw.seek(0)
        stream: BinaryIO = igzip.IGzipFile(fileobj=hashing, mode="rb") if is_gzip else hashing  # type: ignore[assignment]
        prefetched = Prefetched(stream, FASTQ_BLOCK)
        records, blocks, names = 0, FastqBlocks(prefetched), ()  # type: ignore[arg-type]
        try:
            for lines in blocks:
                if len(blocks.carry) > FASTQ_MAX_RECORD:
                    raise MalformedFile(label, "FASTQ", f"record {records + len(lines) // 4 + 1} "
                                        f"is longer than {FASTQ_MAX_RECORD >> 20} MiB (a line "
                                        "without end, or not a FASTQ); ask the lab for the "
                                        "original file")
                if not names:
                    names = tuple(h[1:].split(maxsplit=1)[0].decode("utf-8", "replace")
                                  for h in lines[0:400:4] if len(h) > 1)
                _check_fastq_lines(lines, label, records)
                records += len(lines) // 4
                inflated = blocks.consumed
                if is_gzip and (inflated > max_bytes or (
                        max_ratio and inflated > max_ratio * max(hashing.size, 1 << 20))):
                    raise MalformedFile(label, "FASTQ", f"it inflates to more than {max_ratio:g} "
                                        f"times its compressed size or past {max_bytes >> 30} GiB"
                                        " (a decompression bomb?); ask the lab for the original "
                                        "file")
        except (EOFError, gzip.BadGzipFile, zlib.error, isal_zlib.error) as exc:
            raise MalformedFile(label, "FASTQ", "compressed stream is truncated or corrupt") from exc
        finally:
            prefetched.close()
        tail = blocks.tail()
        if len(tail) % 4:
            raise MalformedFile(label, "FASTQ", f"file ends inside record {records + 1} (truncated)")
        if tail:
            _check_fastq_lines(tail, label, records)
            records += len(tail) // 4
    if records == 0:
        raise MalformedFile(label, "FASTQ", "no records")
    return FileCheck(label, "fastq", hashing.size, hashing.digest.hexdigest(), records,
                     read_names=names)


def bgzf_inflated_size(path: Path, label: str, file_format: str, max_ratio: float,
                       max_bytes: int) -> int:
    """Sum the uncompressed sizes BGZF blocks declare (each block's last four bytes), seeking
    from block to block so only 18 + 4 bytes of each are read; refuse a file that would inflate
    past ``max_ratio`` times its size (beyond the first MiB) or ``max_bytes`` before htslib
    decodes a byte of it. A plain (uncompressed) file inflates to itself."""
    size = path.stat().st_size
    total = 0
    with open(path, "rb") as handle:
        if handle.read(2) != b"\x1f\x8b":
            return size
        offset = 0
        while offset < size:
            handle.seek(offset)
            head = handle.read(18)
            if len(head) < 18 or head[12:14] != b"BC":
                if offset == 0:  # htslib cannot seek in it, and its size is not declared
                    raise MalformedFile(label, file_format, "compressed with gzip, not bgzip "
                                        "(BGZF); recompress it with `bgzip` (VCF) or `samtools "
                                        "view -b` (BAM) and deliver it again")
                break  # not BGZF from here on: htslib's own decoding reports it
            block = int.from_bytes(head[16:18], "little") + 1
            handle.seek(offset + block - 4)
            total += int.from_bytes(handle.read(4), "little")
            offset += block
            if total > max_bytes or (max_ratio and total > max_ratio * max(offset, 1 << 20)):
                raise MalformedFile(label, file_format, "it inflates to more than "
                                    f"{max_ratio:g} times its compressed size or past "
                                    f"{max_bytes >> 30} GiB (a decompression bomb?); ask the lab "
                                    "for the original file")
    return total


def cram_inflated_size(path: Path, label: str, max_ratio: float, max_bytes: int) -> int:
    """Sum the uncompressed sizes CRAM blocks declare, container by container (CRAM 3.x §7-8:
    each block says its raw size, and htslib allocates that much to decode it), reading only
    the headers; refuse past ``max_ratio`` (beyond the first MiB) or ``max_bytes`` as
    :func:`bgzf_inflated_size` does, before htslib decodes a record."""
    size, total, offset = path.stat().st_size, 0, 26
    with open(path, "rb") as handle:
        while offset < size:
            handle.seek(offset)
            head = handle.read(64)
            try:
                length = int.from_bytes(head[:4], "little", signed=True)
                position = 4
                for _ in range(4):  # reference id, start, span, records
                    _, position = read_itf8(head, position)
                for _ in range(2):  # record counter, bases
                    _, position = read_ltf8(head, position)
                blocks, position = read_itf8(head, position)
                landmarks, position = read_itf8(head, position)
                handle.seek(offset + position)
                rest = handle.read(5 * landmarks + 4)
                at = 0
                for _ in range(landmarks):
                    _, at = read_itf8(rest, at)
                body = offset + position + at + 4  # after the container's CRC-32
                if length < 0:
                    raise IndexError(length)
                cursor = body
                for _ in range(blocks):
                    handle.seek(cursor)
                    block = handle.read(17)
                    _, at = read_itf8(block, 2)  # method, content type, content id
                    stored, at = read_itf8(block, at)
                    raw, at = read_itf8(block, at)
                    total += raw
                    cursor += at + stored + 4
            except IndexError as exc:
                raise MalformedFile(label, "CRAM", "a container header is cut short or "
                                    "corrupt") from exc
            offset = body + length
            if total > max_bytes or (max_ratio and total > max_ratio * max(offset, 1 << 20)):
                raise MalformedFile(label, "CRAM", "it inflates to more than "
                                    f"{max_ratio:g} times its compressed size or past "
                                    f"{max_bytes >> 30} GiB (a decompression bomb?); ask the lab "
                                    "for the original file")
    return total


def check_alignments(path: Path, label: str, file_format: str,
                     progress: Progress | None = None, references: Path | None = None
                     ) -> FileCheck:
    """Decode every alignment of a BAM or CRAM with htslib; a missing EOF block, a bad record or
    (CRAM) a reference sequence seqlife does not hold is refused."""
    sha256, size = hash_file(path, progress)
    pysam.set_verbosity(0)
    if references is not None:
        reference.use_cache(references)
    try:
        with pysam.AlignmentFile(str(path), "rc" if file_format == "cram" else "rb",
                                 check_sq=False) as bam:
            header = bam.header.to_dict()
            if file_format == "cram" and (references is None or (absent := reference.missing(
                    header.get("SQ", []), references))):
                count = len(absent) if references else "all"
                raise CollectError(
                    f"{label}: CRAM whose reference sequence is not available for {count} of its "
                    "@SQ lines (each needs an M5 checksum seqlife holds). "
                    "Declare the FASTA it was made with (sample-sheet column 'reference', or "
                    "SEQLIFE_REFERENCE) and collect again.", path=label, format="CRAM")
            samples = tuple(sorted({rg.get("SM", "") for rg in header.get("RG", [])}))
            records = sum(1 for _ in bam.fetch(until_eof=True))
    except (OSError, ValueError) as exc:
        raise MalformedFile(label, file_format.upper(), _htslib_problem(exc)) from exc
    return FileCheck(label, file_format, size, sha256, records, samples)


def check_variants(path: Path, label: str, file_format: str,
                   progress: Progress | None = None) -> FileCheck:
    """Decode every VCF or BCF record (genotypes included) with htslib."""
    sha256, size = hash_file(path, progress)
    pysam.set_verbosity(0)
    try:
        with pysam.VariantFile(str(path)) as vcf:
            samples = tuple(vcf.header.samples)
            records = 0
            for record in vcf:
                for sample in record.samples.values():
                    sample.get("GT")
                records += 1
    except (OSError, ValueError) as exc:
        raise MalformedFile(label, file_format.upper(), _htslib_problem(exc)) from exc
    return FileCheck(label, file_format, size, sha256, records, samples)


def _htslib_problem(exc: Exception) -> str:
    text = str(exc).lower()
    if "truncated" in text or "eof" in text:
        return "file is truncated (no end-of-file block)"
    if "header" in text:
        return "header cannot be read"
    return "a record cannot be decoded"


#: Sample-sheet columns and the formats each may hold (recognised by content).
SHEET_FORMATS = {"fastq": ("fastq",), "bam": ("bam", "cram"), "vcf": ("vcf", "bcf")}


def check_sequencing_file(path: Path, label: str, accepted: Iterable[str],
                          progress: Progress | None = None, max_ratio: float = 0.0,
                          max_bytes: int = 1 << 62, column: str | None = None,
                          references: Path | None = None,
                          sink: Callable[[bytes], None] | None = None) -> FileCheck:
    """Recognise a sequencing file by content and validate it fully; a compressed file is first
    bounded (``max_ratio``, ``max_bytes``) so a decompression bomb is refused unread. A FASTQ
    is handed to ``sink`` byte for byte in the validating read (htslib reads the other formats
    itself, so they are not)."""
    file_format = sniff_format(path, label)
    if file_format not in accepted:
        raise CollectError(
            f"{label}: {file_format.upper()} files are not accepted at intake by the current "
            "policy (collect.sequencing_formats).", path=label)
    if column is not None and file_format not in SHEET_FORMATS[column]:
        raise CollectError(
            f"{label}: listed in the sample sheet's '{column}' column but it is a "
            f"{file_format.upper()} file. Move it to the column for its kind.", path=label)
    if file_format == "fastq":
        return check_fastq(path, label, progress, max_ratio, max_bytes, sink)
    if file_format == "cram":
        cram_inflated_size(path, label, max_ratio, max_bytes)
    else:
        bgzf_inflated_size(path, label, file_format.upper(), max_ratio, max_bytes)
    if file_format in ("bam", "cram"):
        return check_alignments(path, label, file_format, progress, references)
    return check_variants(path, label, file_format, progress)


def refuse_links(root: Path) -> None:
    """A delivery holds its own files: a symbolic link (to another patient's file elsewhere on
    disk, say) or a hard link shared with a file outside is refused, naming the delivered path."""
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root).as_posix()
        if path.is_symlink():
            raise CollectError(f"{relative}: a symbolic link; a delivery must hold its own files, "
                               "not links to files elsewhere. Copy the file in or remove the link.",
                               path=relative)
        if path.is_file() and path.stat().st_nlink > 1:
            raise CollectError(f"{relative}: a hard link shared with another file; deliver a "
                               "copy of its own.", path=relative)


def index_target(path: str, suffixes: Iterable[str], listed: set[str]) -> str | None:
    """The listed data file an index file indexes (``x.bam.bai`` or ``x.bai`` for ``x.bam``;
    ``x.vcf.gz.tbi``/``.csi``), or None."""
    for suffix in suffixes:
        if path.endswith(suffix):
            stem = path[: -len(suffix)]
            if stem in listed:
                return stem
            for data in (f"{stem}.bam", f"{stem}.cram"):
                if data in listed:
                    return data
    return None


def check_index(data: Path, index: Path, label: str) -> None:
    """An index must open with its data file (htslib reads it and its reference list)."""
    pysam.set_verbosity(0)
    try:
        if index.suffix == ".fai":
            with pysam.FastaFile(str(data), filepath_index=str(index)) as handle:
                for name in handle.references:  # every sequence's offsets must fit the file
                    handle.fetch(name, max(0, handle.get_reference_length(name) - 1))
        elif index.suffix in (".bai", ".crai") or data.suffix == ".bam":
            with pysam.AlignmentFile(str(data), index_filename=str(index)) as handle:
                if not handle.check_index():
                    raise ValueError("no index")
        else:
            with pysam.TabixFile(str(data), index=str(index)) as handle:
                handle.contigs  # noqa: B018 - reading the index's contig list is the check
    except (OSError, ValueError) as exc:
        raise MalformedFile(label, "index", "it does not open with the file it indexes (stale "
                            "or for another file)") from exc


# --- tables ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TableSchema:
    name: str
    types: Mapping[str, pa.DataType]
    required: frozenset[str]
    #: canonical column -> the classify detector whose content fills it (None: a measure)
    roles: Mapping[str, str | None] = field(default_factory=dict)
    #: canonical column -> {delivered code (case-insensitive) -> our code}
    values: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    #: columns an export may leave out altogether (read as empty); every other one must be there,
    #: even when its cells may be empty: a consent table without its withdrawal column is refused
    may_be_absent: frozenset[str] = frozenset()

    @property
    def arrow_schema(self) -> pa.Schema:
        return pa.schema([(name, kind) for name, kind in self.types.items()])


def load_schema(name: str, schema_dir: Path = SCHEMA_DIR) -> TableSchema:
    document = yaml.safe_load((schema_dir / f"{name}.yaml").read_text(encoding="utf-8"))
    columns = document["columns"]
    return TableSchema(
        name=document["name"],
        types={c["name"]: _ARROW_TYPES[c["type"]] for c in columns},
        required=frozenset(c["name"] for c in columns if c["required"]),
        roles={c["name"]: c.get("role") for c in columns},
        values={c["name"]: {str(k).casefold(): str(v) for k, v in c["values"].items()}
                for c in columns if c.get("values")},
        may_be_absent=frozenset(c["name"] for c in columns if c.get("may_be_absent")),
    )


DateParser = Callable[[str], "date | None"]


def read_table(path: Path, schema: TableSchema, label: str, parse_date: DateParser | None = None,
               encodings: Iterable[str] = ("utf-8", "gb18030")) -> pa.Table:
    """Read a table whose columns carry the schema's own names (CSV/TSV in UTF-8 or GB18030,
    .xlsx or Parquet) and conform it to the declared types; errors name columns only."""
    from seqlife.classify.detectors import date_parser

    table = read_table_file(path, label, tuple(encodings))
    _check_columns(table.column_names, schema, label)
    for name in schema.types:  # an optional column left out of the export is empty
        if name not in table.column_names:
            table = table.append_column(name, pa.nulls(table.num_rows, pa.string()))
    return conform(table, ColumnMap.identity(schema.name, table.column_names), schema, label,
                   parse_date or date_parser())


def _check_columns(names: list[str], schema: TableSchema, label: str) -> None:
    missing = [name for name in schema.types if name not in names
               and name not in schema.may_be_absent]
    extra = [name for name in names if name not in schema.types]
    if missing or extra:
        raise SchemaMismatch(label, f"missing column(s) {missing}, undeclared column(s) {extra}")


# --- a hospital's own columns, mapped onto ours (GB/T 39725 §11.3.4.4 a) ------------------------

KEEP, DROP = "keep", "drop"


@dataclass(frozen=True)
class ColumnMap:
    """Delivered column -> canonical column, ``keep`` (stored under its own name: measures and
    other columns that identify nobody) or ``drop`` (not collected: minimum necessary)."""

    table: str
    columns: Mapping[str, str]

    @classmethod
    def identity(cls, table: str, names: Iterable[str]) -> ColumnMap:
        return cls(table, {name: name for name in names})

    def render(self) -> bytes:
        """The map as YAML, the form a steward edits and approves (``collect --map FILE``)."""
        document = {"table": self.table, "columns": dict(self.columns)}
        return yaml.safe_dump(document, allow_unicode=True, sort_keys=False).encode("utf-8")

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.render()).hexdigest()


def load_column_map(path: Path) -> ColumnMap:
    """Read a steward's column map (YAML: ``table``, ``columns: {delivered: target}``)."""
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise CollectError(f"{path.name}: the column map cannot be read as UTF-8 YAML.") from exc
    if not isinstance(document, Mapping) or not isinstance(document.get("columns"), Mapping) \
            or not isinstance(document.get("table"), str):
        raise CollectError(f"{path.name}: a column map needs 'table' and 'columns' "
                           "(delivered column: canonical column, keep or drop).")
    columns = {str(k): str(v) for k, v in document["columns"].items()}
    return ColumnMap(document["table"], columns)


@dataclass(frozen=True)
class MapProposal:
    """A column map proposed from the content of a delivered table, with what is left to decide."""

    column_map: ColumnMap
    undecided: Mapping[str, str]      # delivered column -> why a steward must decide
    missing: tuple[str, ...]          # required canonical columns no delivered column fills


def propose_column_map(names: Sequence[str], labels: Mapping[str, tuple[str, str]],
                       schema: TableSchema, order: Mapping[str, float]) -> MapProposal:
    """Map delivered columns onto canonical ones by their detected role.

    ``labels``: delivered column -> (detector, identifier type) from classification by content;
    ``order``: a sort key per delivered column (e.g. median date, distinct values) used when one
    role fills several canonical columns in schema order (admission before discharge before
    sequencing; province, city, county). Columns that identify nobody are kept under their own
    names; a personal column with no canonical place is left for the steward to decide.
    """
    mapping: dict[str, str] = {}
    undecided: dict[str, str] = {}
    taken: set[str] = set()
    for name in names:  # a delivered name that is already ours goes to itself
        if name in schema.types:
            mapping[name] = name
            taken.add(name)
    by_role: dict[str, list[str]] = {}
    for name in sorted((n for n in names if n not in mapping), key=lambda n: order.get(n, 0.0)):
        by_role.setdefault(labels.get(name, ("", "unknown"))[0], []).append(name)
    for role, delivered in by_role.items():
        slots = [c for c, r in schema.roles.items() if r == role and role and c not in taken]
        for name, slot in zip(delivered, slots):
            mapping[name] = slot
            taken.add(slot)
        for name in delivered[len(slots):]:
            identifier = labels.get(name, ("", "unknown"))[1]
            if identifier in ("none", "sensitive"):
                mapping[name] = KEEP
            else:
                undecided[name] = (f"content looks like {role or 'nothing a detector knows'} "
                                   f"({identifier}) and has no place in the '{schema.name}' "
                                   "schema: map it to a column, or drop it")
    missing = tuple(c for c in schema.types if c in schema.required and c not in taken)
    ordered = {name: mapping[name] for name in names if name in mapping}
    return MapProposal(ColumnMap(schema.name, ordered), undecided, missing)


def proposal_order(columns: Mapping[str, pa.ChunkedArray], labels: Mapping[str, tuple[str, str]],
                   parse_date: DateParser, sample: int = 2000) -> dict[str, float]:
    """Sort keys that put same-role columns in schema order: dates by their median (admission,
    then discharge, then sequencing), regions by how few distinct values they hold (province,
    city, county), anything else by how many (the patient's name before the doctor's)."""
    order: dict[str, float] = {}
    for name, column in columns.items():
        values = [v for v in column.slice(0, sample).to_pylist() if v is not None]
        role = labels.get(name, ("", ""))[0]
        if role in ("date", "birth_date"):
            days = sorted(d.toordinal() for d in (
                v if isinstance(v, date) else parse_date(str(v).strip()) for v in values)
                if isinstance(d, date))
            order[name] = float(days[len(days) // 2]) if days else 0.0
        elif role == "region":
            order[name] = float(len(set(values)))
        else:
            order[name] = -float(len(set(values)))
    return order


def check_column_map(column_map: ColumnMap, names: Sequence[str], schema: TableSchema,
                     labels: Mapping[str, tuple[str, str]], label: str) -> None:
    """A steward's map must place every delivered column, target each canonical column once,
    fill every required one, and keep only columns that identify nobody."""
    problems = []
    if column_map.table != schema.name:
        problems.append(f"the map is for table '{column_map.table}', not '{schema.name}'")
    unplaced = [n for n in names if n not in column_map.columns]
    if unplaced:
        problems.append(f"delivered column(s) {unplaced} are not in the map")
    unknown = [n for n in column_map.columns if n not in names]
    if unknown:
        problems.append(f"the map names column(s) {unknown} the table does not have")
    targets = [t for t in column_map.columns.values() if t not in (KEEP, DROP)]
    bad = sorted({t for t in targets if t not in schema.types})
    if bad:
        problems.append(f"target(s) {bad} are not columns of '{schema.name}' (or keep/drop)")
    twice = sorted({t for t in targets if targets.count(t) > 1})
    if twice:
        problems.append(f"canonical column(s) {twice} are filled twice")
    missing = sorted(schema.required - set(targets))
    if missing:
        problems.append(f"required column(s) {missing} are not filled")
    personal = [n for n, t in column_map.columns.items() if t == KEEP and n in labels
                and labels[n][1] not in ("none", "sensitive")]
    if personal:
        problems.append(f"column(s) {personal} are kept under their own names but their content "
                        "looks personal: map them to a schema column or drop them")
    if problems:
        raise SchemaMismatch(label, "column map refused: " + "; ".join(problems))


def conform(table: pa.Table, column_map: ColumnMap, schema: TableSchema, label: str,
            parse_date: DateParser) -> pa.Table:
    """Rename by the map, drop what it drops, convert to the declared types, normalise codes.

    Text is parsed as the declared type (dates in the formats the date detector knows); a value
    that does not parse is refused naming the column and how many rows, never the value."""
    arrays, names = [], []
    for delivered, target in column_map.columns.items():
        if target == DROP:
            continue
        column = table.column(delivered)
        name = delivered if target == KEEP else target
        kind = schema.types.get(name, pa.string()) if target != KEEP else None
        arrays.append(_as_type(column, kind, schema.values.get(name), name, label, parse_date))
        names.append(name)
    out = pa.table(dict(zip(names, arrays)))
    ours = [c for c in schema.types if c in names]
    out = out.select(ours + [n for n in names if n not in schema.types])
    for name in sorted(schema.required):
        nulls = out.column(name).null_count if name in names else out.num_rows
        if nulls:
            raise SchemaMismatch(label, f"required column '{name}' is empty in {nulls} row(s)")
    return out


def _as_type(column: pa.ChunkedArray, kind: pa.DataType | None, codes: Mapping[str, str] | None,
             name: str, label: str, parse_date: DateParser) -> pa.ChunkedArray:
    if kind is None:  # kept under its own name: as delivered
        return column
    if pa.types.is_date(kind) and (pa.types.is_timestamp(column.type) or
                                   pa.types.is_date(column.type)):
        return column.cast(kind)
    values = column.to_pylist()
    texts = [None if v is None else str(v).strip() or None for v in values]
    if pa.types.is_date(kind):
        parsed = [None if t is None else parse_date(t) for t in texts]
    elif pa.types.is_floating(kind) or pa.types.is_integer(kind):
        parsed = [None if t is None else _number(t, kind) for t in texts]
    else:
        if codes:
            texts = [None if t is None else codes.get(t.casefold(), t) for t in texts]
        return pa.chunked_array([pa.array(texts, pa.string())])
    bad = sum(1 for t, p in zip(texts, parsed) if t is not None and p is None)
    if bad:
        what = "a date in a recognised format" if pa.types.is_date(kind) else "a number"
        raise SchemaMismatch(label, f"column '{name}': {bad} value(s) are not {what}")
    return pa.chunked_array([pa.array(parsed, kind)])


def _number(text: str, kind: pa.DataType) -> float | int | None:
    try:
        value = float(text.replace(",", ""))
    except ValueError:
        return None
    if not math.isfinite(value):
        return None
    if pa.types.is_integer(kind):
        return int(value) if value.is_integer() else None
    return value


def write_parquet(table: pa.Table, path: Path) -> None:
    """Deterministic Parquet (same table -> same bytes), so re-collecting is idempotent."""
    pq.write_table(table, path, compression="zstd", write_statistics=True)


# --- consent and linking -------------------------------------------------------------------


@dataclass(frozen=True)
class ConsentRecord:
    scope: str
    signed_on: date
    withdrawn_on: date | None


def consent_status(records: list[ConsentRecord], scenario: str,
                   scenario_scopes: Mapping[str, list[str]]) -> str:
    """'covered', 'withdrawn', 'not_covered' or 'missing' for one subject and one use."""
    if not records:
        return "missing"
    covering = [r for r in records if r.scope in scenario_scopes[scenario]]
    if not covering:
        return "not_covered"
    if all(r.withdrawn_on is not None for r in covering):
        return "withdrawn"
    return "covered"


_HEX_TO_LETTERS = str.maketrans("0123456789abcdef", "abcdefghijkmnpqr")


def subject_surrogate(secret: bytes, subject_key: str) -> str:
    """Keyed surrogate for a subject: stable per project secret, useless without it (§10.2 f).

    96 bits written in letters only, so no run of digits in a surrogate can ever look like a
    phone or ID number to the identifier guards.
    """
    digest = hmac.new(secret, subject_key.encode("utf-8"), hashlib.sha256).hexdigest()[:24]
    return "S-" + digest.translate(_HEX_TO_LETTERS)


def sample_code(secret: bytes, sample_id: str) -> str:
    """The controller's code for a lab sample ID: what the catalog and the stored file names
    carry instead of it (a sample ID identifies as much as a record number: SEQ §5)."""
    return subject_surrogate(secret, f"sample:{sample_id}")


def coded_path(path: str, codes: Mapping[str, str]) -> str:
    """A delivered path with every sample ID and record number it contains replaced by its code
    (longest first, any letter case), so no stored object, catalog row or lineage file is named
    after a sample or a patient. The rest of the name (folders, lane, read, extension) stays."""
    known = sorted((k for k in codes if k), key=len, reverse=True)
    if not known:
        return path
    pattern = re.compile("|".join(re.escape(k) for k in known), re.IGNORECASE)
    lowered = {k.lower(): v for k, v in codes.items()}
    return pattern.sub(lambda m: lowered[m.group(0).lower()], path)


@dataclass(frozen=True)
class PlannedFile:
    """A delivered file and the sample-sheet row(s) it belongs to. A file listed on several rows
    (a trio or multi-sample VCF) belongs to the first row's sample and names the others as
    ``members`` ((sample_id, record number) pairs), each consented like the first."""

    path: str
    role: str
    sample_id: str | None
    subject_key: str | None = field(repr=False)
    members: tuple[tuple[str, str], ...] = field(default=(), repr=False)


@dataclass(frozen=True)
class CollectionPlan:
    """What will be collected: files with their subject links, and who is left out and why."""

    scenario: str
    files: tuple[PlannedFile, ...]
    included_subjects: frozenset[str] = field(repr=False)
    excluded_subjects: frozenset[str] = field(repr=False)
    consents: Mapping[str, tuple[ConsentRecord, ...]] = field(repr=False)


def consents_by_subject(consents: pa.Table) -> dict[str, tuple[ConsentRecord, ...]]:
    out: dict[str, list[ConsentRecord]] = {}
    for row in consents.to_pylist():
        out.setdefault(row["mrn"], []).append(
            ConsentRecord(row["scope"], row["signed_on"], row["withdrawn_on"]))
    return {key: tuple(value) for key, value in out.items()}


def listed_files(cell: str | None) -> list[str]:
    """The files of one sample-sheet cell: one path, or several separated by ';' (paired-end
    R1;R2, or lanes)."""
    return [part.strip() for part in (cell or "").split(";") if part.strip()]


def plan_collection(samples: pa.Table, consents: pa.Table, clinical: pa.Table, scenario: str,
                    policy: Policy, delivered: set[str]) -> CollectionPlan:
    """Link every sample and clinical row to a covering consent, or stop with the reason."""
    scopes = policy["scenario_scopes"]
    if scenario not in scopes:
        raise CollectError(f"Unknown collection scenario '{scenario}'; the policy knows "
                           f"{sorted(scopes)}.")
    by_subject = consents_by_subject(consents)
    included: set[str] = set()
    excluded: set[str] = set()

    def decide(subject_key: str, where: str, ref: str) -> bool:
        records = list(by_subject.get(subject_key, ()))
        status = consent_status(records, scenario, scopes)
        if status == "missing":
            raise ConsentMissing(where, ref)
        if status == "not_covered":
            raise ConsentScopeError(where, ref, "/".join(sorted({r.scope for r in records})), scenario)
        if status == "withdrawn" and policy["on_withdrawn"] == "exclude":
            excluded.add(subject_key)
            return False
        included.add(subject_key)
        return True

    for index, subject_key in enumerate(clinical.column("mrn").to_pylist()):
        decide(subject_key, "clinical table", f"in row {index + 1}")
    rows_of: dict[tuple[str, str], list[dict]] = {}  # (path, column) -> the rows listing it
    for number, row in enumerate(samples.to_pylist(), 1):  # rows named by number: a sample ID
        kept = decide(row["mrn"], "sample sheet", f"in row {number}")  # links to a patient
        for role in SHEET_FORMATS:
            for relative in listed_files(row[role]):
                if relative not in delivered:
                    raise CollectError(
                        f"{relative}: listed in row {number} of the sample sheet "
                        "but not delivered. Deliver the file or correct the sample sheet.",
                        path=relative)
                rows_of.setdefault((relative, role), []).append({**row, "_kept": kept})
    files: list[PlannedFile] = []
    for (relative, role), rows in rows_of.items():
        if len({row["sample_id"] for row in rows}) < len(rows) and len(rows) > 1:
            raise CollectError(f"{relative}: listed twice for the same sample in the sample "
                               "sheet. List it once.", path=relative)
        kept = [row for row in rows if row["_kept"]]
        if not kept:
            continue
        if len(kept) < len(rows):
            raise CollectError(
                f"{relative}: holds the data of {len(rows)} samples of the sample sheet and "
                f"{len(rows) - len(kept)} of their subjects withdrew consent (RARE §4.9). Ask "
                "the lab for a copy without their samples.", path=relative)
        first, *others = kept
        files.append(PlannedFile(relative, role, first["sample_id"], first["mrn"],
                                 tuple((row["sample_id"], row["mrn"]) for row in others)))
    listed = {path for path, _ in rows_of} | set(references_listed(samples))
    unlisted = sorted(path for path in delivered if path not in listed
                      and index_target(path, policy["index_suffixes"], listed) is None)
    if unlisted:
        raise CollectError(
            f"{unlisted[0]}: delivered but not listed in the sample sheet, so it cannot be linked "
            f"to a subject or a consent ({len(unlisted)} such file(s)). List it or remove it.",
            path=unlisted[0])
    return CollectionPlan(scenario, tuple(files), frozenset(included), frozenset(excluded),
                          by_subject)


def references_listed(samples: pa.Table) -> list[str]:
    """The reference FASTA files the sample sheet declares (optional column ``reference``)."""
    if "reference" not in samples.column_names:
        return []
    return sorted({path for cell in samples.column("reference").to_pylist()
                   for path in listed_files(cell)})


def check_inner_sample(check: FileCheck, planned: PlannedFile,
                       others: Iterable[str] = ()) -> None:
    """The samples named inside a file must be the ones the sample sheet links it to: in a
    BAM/VCF by the lab's sample ID (how most labs name samples) or the subject's record number
    (for a trio VCF, every member's); in FASTQ read names, no other sample or subject of the
    sheet may appear."""
    own = {planned.sample_id, planned.subject_key} | {
        name for member in planned.members for name in member}
    foreign = [o for o in others if o and o not in own
               and any(o in name for name in check.read_names)]
    if foreign:
        raise CollectError(
            f"{planned.path}: its read names name another sample of the sample sheet, not the "
            "one its row lists. The file may belong to another patient; check the delivery "
            "with the lab before collecting.", path=planned.path)
    if check.inner_samples and not set(check.inner_samples) <= own:
        raise CollectError(
            f"{planned.path}: the sample named inside the file does not match the subject its "
            "sample-sheet row gives. The file may belong to another patient; check the delivery "
            "with the lab before collecting.", path=planned.path)


def keep_subjects(table: pa.Table, subjects: frozenset[str]) -> pa.Table:
    """Rows of the subjects being collected only (withdrawn subjects are left out)."""
    return table.filter(pc.is_in(table.column("mrn"), value_set=pa.array(sorted(subjects))))


# --- manifest --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ManifestEntry:
    path: str
    role: str
    format: str
    size: int
    sha256: str
    records: int
    sample_id: str | None
    subject: str | None


def content_digest(entries: Iterable[ManifestEntry]) -> str:
    """Digest of what a version holds (paths and contents): equal digests mean the same data."""
    canonical = sorted((e.path, e.sha256) for e in entries)
    return hashlib.sha256(json.dumps(canonical).encode()).hexdigest()


def render_manifest(dataset: str, version: int, scenario: str, policy_hash: str,
                    entries: Iterable[ManifestEntry]) -> bytes:
    """The manifest stored beside the data: every file with its digest, subject by surrogate."""
    items = sorted(entries, key=lambda e: e.path)
    document = {
        "dataset": dataset,
        "version": version,
        "scenario": scenario,
        "policy_hash": policy_hash,
        "content_digest": content_digest(items),
        "files": [e.__dict__ for e in items],
    }
    return json.dumps(document, indent=2, sort_keys=True).encode("utf-8")
