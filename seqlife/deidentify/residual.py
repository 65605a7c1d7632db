"""The last check before a de-identified version is stored: no identifier of any subject of the
source version is left in any byte of any output file (GB/T 39725 §10.2 a, d; SEQ §5).

Scrubbing rewrites the places a sample or person is known to be named (headers, read groups,
read names, tags, sample columns). This check does not trust that list: it holds the raw
identifiers of the version in memory — record numbers, the lab's sample IDs, names, resident IDs,
phones, e-mail addresses, insurance numbers — and scans every output file, decompressed and
streamed, for any of them (Aho-Corasick over the raw bytes, so binary BAM records, text VCF and
FASTQ are scanned alike). A hit names the file and where in it (header or records), never the
value.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO
from urllib.parse import quote

import ahocorasick
import pandas as pd
import pysam

from seqlife.deidentify.errors import DeidentificationError

#: Identifiers shorter than this are not searched for: a 3-character code occurs by chance in
#: any large file, and no identifier the detectors know is that short (a 2-character Chinese
#: name is 6 bytes).
MIN_TOKEN_BYTES = 5
CHUNK = 1 << 20


class ResidualIdentifier(DeidentificationError):
    """An identifier of a source subject survived in an output file; nothing was stored."""

    def __init__(self, hits: Mapping[str, Iterable[str]]) -> None:
        where = "; ".join(f"{path}: {', '.join(sorted(parts))}" for path, parts in hits.items())
        super().__init__(
            f"De-identification stopped: an identifier of a subject of the source version is "
            f"still in {len(hits)} output file(s) — {where} (GB/T 39725 §10.2 a, d). Nothing was "
            "stored. The scrubber does not know this place yet: report the file's layout to the "
            "data engineer.", files=sorted(hits))
        self.hits = {path: sorted(parts) for path, parts in hits.items()}


def identifiers_of(frames: Iterable[tuple[pd.DataFrame, Iterable[str]]]) -> frozenset[str]:
    """The values of the given columns of each table (the direct identifiers and linkage
    columns of the raw version), stripped, as long as they are long enough to search for."""
    found: set[str] = set()
    for frame, columns in frames:
        for column in columns:
            if column in frame:
                found.update(str(v).strip() for v in frame[column].dropna())
    return frozenset(v for v in found if len(v.encode("utf-8")) >= MIN_TOKEN_BYTES)


@dataclass(frozen=True)
class Scanner:
    """An automaton over the identifiers' UTF-8 bytes (latin-1 text: one character per byte)."""

    automaton: ahocorasick.Automaton
    longest: int

    @classmethod
    def of(cls, identifiers: Iterable[str]) -> Scanner:
        automaton = ahocorasick.Automaton()
        longest = 0
        for value in identifiers:
            for key in written_forms(value):
                automaton.add_word(key.decode("latin-1"), len(key))
                longest = max(longest, len(key))
        if longest:
            automaton.make_automaton()
        return cls(automaton, longest)

    def offsets(self, chunks: Iterable[bytes]) -> Iterator[int]:
        """Offsets (in the decompressed stream) where an identifier ends; constant memory. The
        stream is compared in ASCII lower case, so ``lab7731`` and ``LAB7731`` are one."""
        if not self.longest:
            return
        carry, base = b"", 0
        for chunk in chunks:
            chunk = chunk.lower()
            data = carry + chunk
            for end, _ in self.automaton.iter(data.decode("latin-1")):
                if end >= len(carry):  # one ending inside the carry was found last time
                    yield base - len(carry) + end
            carry = data[-(self.longest - 1):] if self.longest > 1 else b""
            base += len(chunk)


_FULL_WIDTH = str.maketrans({c: chr(ord(c) + 0xFEE0) for c in
                            "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"})


def written_forms(value: str) -> set[bytes]:
    """The ways a lab's or hospital's software writes an identifier into a file, in ASCII lower
    case (the scan lowers the stream the same way): UTF-8, GB18030 (a Chinese name in a path
    written by a Windows tool), percent-encoded (a URL), full-width characters (Chinese input
    methods), hex (a BAM ``H`` tag), and an 11-digit phone grouped 3-4-4 with '-' or ' '."""
    forms = {value.encode("utf-8"), quote(value, safe="").encode("ascii"),
             value.translate(_FULL_WIDTH).encode("utf-8"), value.encode("utf-8").hex().encode()}
    try:
        forms.add(value.encode("gb18030"))
    except UnicodeEncodeError:
        pass  # a character GB18030 does not have cannot be written that way either
    if len(value) == 11 and value.isdigit():
        forms |= {f"{value[:3]}{sep}{value[3:7]}{sep}{value[7:]}".encode() for sep in "- "}
    return {form.lower() for form in forms if len(form) >= MIN_TOKEN_BYTES}


def _decompressed(handle: BinaryIO) -> Iterator[bytes]:
    head = handle.read(2)
    handle.seek(0)
    stream: BinaryIO = gzip.GzipFile(fileobj=handle) if head == b"\x1f\x8b" else handle  # type: ignore[assignment]
    while chunk := stream.read(CHUNK):
        yield chunk


def _cram_as_sam(path: Path) -> tuple[int, Iterator[bytes]]:
    """A CRAM decoded by htslib into SAM text (header first): its blocks are compressed with
    codecs a byte scan cannot see through (rANS, arithmetic, name tokenisers)."""
    pysam.set_verbosity(0)
    with pysam.AlignmentFile(str(path), "rc", check_sq=False) as cram:
        header = str(cram.header).encode("utf-8", "surrogateescape")
    return len(header), _cram_records(path, header)


def _cram_records(path: Path, header: bytes) -> Iterator[bytes]:
    yield header
    with pysam.AlignmentFile(str(path), "rc", check_sq=False) as cram:
        batch: list[str] = []
        size = 0
        for read in cram.fetch(until_eof=True):
            line = read.to_string()
            batch.append(line)
            size += len(line)
            if size >= CHUNK:
                yield ("\n".join(batch) + "\n").encode("utf-8", "surrogateescape")
                batch, size = [], 0
        if batch:
            yield ("\n".join(batch) + "\n").encode("utf-8", "surrogateescape")


def _streams(path: Path, file_format: str) -> Iterator[tuple[int, Iterator[bytes]]]:
    """What is scanned of one file, each with where its header ends: the bytes decompressed,
    and for CRAM also its decoded text."""
    with open(path, "rb") as handle:
        yield _header_end(path, file_format), _decompressed(handle)
    if file_format == "cram":
        yield _cram_as_sam(path)


def _header_end(path: Path, file_format: str) -> int:
    """Where the header ends in the decompressed stream (0 for FASTQ: it has none)."""
    if file_format in ("fastq", "index"):
        return 0
    if file_format == "cram":
        return 1 << 62  # a hit in the raw bytes: the header block (records are compressed)
    with open(path, "rb") as handle:
        seen = bytearray()
        for chunk in _decompressed(handle):
            seen += chunk
            if file_format == "bam" and len(seen) >= 8:
                return 8 + int.from_bytes(seen[4:8], "little")
            if file_format == "bcf" and len(seen) >= 9:
                return 9 + int.from_bytes(seen[5:9], "little")
            if file_format == "vcf":
                at = seen.find(b"\n#CHROM")
                if at >= 0 and seen.find(b"\n", at + 1) >= 0:
                    return seen.find(b"\n", at + 1) + 1
            if len(seen) > 64 << 20:
                break
    return len(seen)


def scan(files: Iterable[tuple[str, Path, str]], scanner: Scanner) -> dict[str, set[str]]:
    """For each (label, path, format), the parts of the file holding an identifier: 'header' or
    'records' ('read names or tags' for BAM and FASTQ). Empty when every file is clean."""
    hits: dict[str, set[str]] = {}
    for label, path, file_format in files:
        body = "read names or tags" if file_format in ("bam", "cram", "fastq") else "records"
        try:
            for header_end, stream in _streams(path, file_format):
                for offset in scanner.offsets(stream):
                    hits.setdefault(label, set()).add("header" if offset < header_end else body)
        except (OSError, EOFError, ValueError, zlib.error) as exc:
            raise DeidentificationError(
                f"{label}: the de-identified output cannot be read back for the identifier scan "
                "(corrupt); nothing was stored.") from exc
    return hits


def check_outputs(files: Iterable[tuple[str, Path, str]], identifiers: Iterable[str]
                  ) -> dict[str, int]:
    """Raise :class:`ResidualIdentifier` when any output still holds a source identifier;
    otherwise say how much was scanned for how many identifiers (counts for the report)."""
    files, identifiers = list(files), frozenset(identifiers)
    if not identifiers:
        raise DeidentificationError("The identifier scan has no identifier of the source to look "
                                    "for (no record number, sample ID or name was read): it "
                                    "cannot show the outputs are clean, so nothing was stored.")
    hits = scan(files, Scanner.of(identifiers))
    if hits:
        raise ResidualIdentifier(hits)
    return {"files": len(files), "identifiers": len(identifiers)}
