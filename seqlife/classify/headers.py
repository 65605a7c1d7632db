"""Read what a sequencing file says about itself from the start of its stream only: the SAM
header of a BAM or CRAM (and, for a BAM, the read names and text tags of its first records), the
meta lines and sample columns of a VCF or BCF, the read names of a FASTQ.

A 100 GB file costs a few megabytes. Values stay in this process: labels built from a
``Header`` carry field names and counts only (GB/T 39725 §10.2 a, d; SEQ §5).
"""

from __future__ import annotations

import bz2
import lzma
import re
import struct
import zlib
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Callable, Mapping

from seqlife.exceptions import ClassificationError

HEADER_PREFIX_BYTES = 8 << 20  # a header larger than this is refused rather than read unbounded
#: BAM records and FASTQ reads whose names and tags are looked at: a pipeline writes every
#: record of a file the same way, so the first thousand show the layout.
RECORDS_SAMPLED = 1000
#: Field name for a header line or item that does not have the shape its format requires; its
#: text is never used as a name, since it may be anything (a patient's name).
MALFORMED = "_malformed"

#: SAM header line types whose items are KEY:VALUE pairs (SAM v1 §1.3); @CO is free text.
SAM_KEYED_LINES = ("HD", "SQ", "RG", "PG")
_SAM_LINE = re.compile(r"@[A-Za-z][A-Za-z]")
_SAM_ITEM = re.compile(r"[A-Za-z][A-Za-z0-9]:")
_SAM_TAG = re.compile(rb"[A-Za-z][A-Za-z0-9]")
_VCF_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]{0,63}")

_I32 = struct.Struct("<i")
_U32 = struct.Struct("<I")
_U16 = struct.Struct("<H")
#: Sizes of fixed-size BAM aux values and of B-array elements (SAM v1 §4.2.4).
_AUX_SIZE = {b"A": 1, b"c": 1, b"C": 1, b"s": 2, b"S": 2, b"i": 4, b"I": 4, b"f": 4}
#: CRAM block content type of the SAM header block (CRAM 3.1 §8.1).
_CRAM_FILE_HEADER = 0
#: Decompressors for the CRAM block compression methods a SAM header block may use (raw is 0),
#: by their number (CRAM 3.1 §8.1).
_CRAM_CODECS: Mapping[int, Callable[[], Any]] = {
    1: lambda: zlib.decompressobj(31), 2: bz2.BZ2Decompressor, 3: lzma.LZMADecompressor}


@dataclass(frozen=True)
class Header:
    """Header fields of a sequencing file: field name -> values. Values never leave the process."""

    format: str
    fields: Mapping[str, tuple[str, ...]] = field(repr=False)


def read_header(stream: BinaryIO, file_format: str, label: str) -> Header:
    """Parse the header of a BAM, CRAM, VCF, BCF or FASTQ from the first
    ``HEADER_PREFIX_BYTES`` of the stream."""
    parse = _PARSERS.get(file_format)
    if parse is None:
        raise ClassificationError(f"{label}: {file_format.upper()} headers are not read by "
                                  "classification (BAM, CRAM, VCF, BCF and FASTQ are).")
    fields: dict[str, list[str]] = {}
    parse(_decompressed_prefix(stream, HEADER_PREFIX_BYTES, label), label, fields)
    return Header(file_format, {key: tuple(values) for key, values in fields.items()})


def _decompressed_prefix(stream: BinaryIO, limit: int, label: str) -> bytes:
    """Inflate at most ``limit`` bytes from the start of a (multi-member) gzip/BGZF stream, or
    return plain bytes as they are; a member that inflates without bound is cut at the limit."""
    raw = stream.read(limit)
    if raw[:2] != b"\x1f\x8b":
        return raw
    out, data = bytearray(), raw
    while data and len(out) < limit:
        inflater = zlib.decompressobj(31)
        try:
            out += inflater.decompress(data, limit - len(out))
        except zlib.error as exc:
            raise ClassificationError(f"{label}: the compressed header is corrupt") from exc
        if not inflater.eof:
            break
        data = inflater.unused_data
    return bytes(out)


def _add(fields: dict[str, list[str]], name: str, value: str) -> None:
    fields.setdefault(name, []).append(value)


def _too_large(label: str, file_format: str) -> ClassificationError:
    return ClassificationError(f"{label}: the {file_format} header is truncated or larger than "
                               f"{HEADER_PREFIX_BYTES >> 20} MiB; nothing was classified")


# --- SAM header text (BAM, CRAM) -------------------------------------------------------------


def _sam_text(text: bytes, fields: dict[str, list[str]]) -> None:
    """@HD/@SQ/@RG/@PG items as ``RG.SM``-style fields, @CO and any other line type as one field
    per type (``CO``, ``XY``), lines or items of the wrong shape as ``_malformed``."""
    for line in text.rstrip(b"\x00").decode("utf-8", "replace").split("\n"):
        line = line.rstrip("\r")
        if not line:
            continue
        tag, *items = line.split("\t")
        if not _SAM_LINE.fullmatch(tag):
            _add(fields, MALFORMED, line)
            continue
        kind = tag[1:]
        if kind not in SAM_KEYED_LINES:
            _add(fields, kind, "\t".join(items))
            continue
        for item in items:
            if _SAM_ITEM.match(item):
                _add(fields, f"{kind}.{item[:2]}", item[3:])
            else:
                _add(fields, f"{kind}.{MALFORMED}", item)


def _bam(data: bytes, label: str, fields: dict[str, list[str]]) -> None:
    if data[:4] != b"BAM\x01" or len(data) < 8:
        raise ClassificationError(f"{label}: not a BAM header")
    length = _I32.unpack_from(data, 4)[0]
    end = 8 + length
    if length < 0 or end > len(data):
        raise _too_large(label, "BAM")
    _sam_text(data[8:end], fields)
    _bam_records(data, end, label, fields)


def _bam_records(data: bytes, position: int, label: str, fields: dict[str, list[str]]) -> None:
    """Read names and text tags (Z, H) of the records complete in the prefix, at most
    ``RECORDS_SAMPLED`` (SAM v1 §4.2)."""
    if position + 4 > len(data):
        return
    references = _I32.unpack_from(data, position)[0]
    position += 4
    for _ in range(references):
        if position + 4 > len(data):
            return
        name_length = _I32.unpack_from(data, position)[0]
        if name_length < 1:
            raise ClassificationError(f"{label}: a BAM reference name length is invalid (corrupt "
                                      "file)")
        position += 4 + name_length + 4
    for _ in range(RECORDS_SAMPLED):
        if position + 4 > len(data):
            return
        size = _I32.unpack_from(data, position)[0]
        start, stop = position + 4, position + 4 + size
        if stop > len(data):
            return
        if size < 32:
            raise ClassificationError(f"{label}: a BAM record is shorter than its fixed fields "
                                      "(corrupt file)")
        name_end = start + 32 + data[start + 8]
        cigar_ops = _U16.unpack_from(data, start + 12)[0]
        sequence = _I32.unpack_from(data, start + 16)[0]
        aux = name_end + 4 * cigar_ops + (sequence + 1) // 2 + sequence
        if sequence < 0 or aux > stop:
            raise ClassificationError(f"{label}: a BAM record's lengths exceed the record "
                                      "(corrupt file)")
        _add(fields, "read_name", data[start + 32:name_end - 1].decode("utf-8", "replace"))
        _aux_strings(data[aux:stop], label, fields)
        position = stop


def _aux_strings(aux: bytes, label: str, fields: dict[str, list[str]]) -> None:
    """Each text tag (types Z and H) of one record as a ``tag.XX`` field."""
    position = 0
    while position < len(aux):
        tag, kind = aux[position:position + 2], aux[position + 2:position + 3]
        position += 3
        if not _SAM_TAG.fullmatch(tag):
            raise ClassificationError(f"{label}: a BAM record's tags are corrupt")
        if kind in (b"Z", b"H"):
            end = aux.find(b"\x00", position)
            if end < 0:
                raise ClassificationError(f"{label}: a BAM record's text tag is not terminated "
                                          "(corrupt file)")
            _add(fields, f"tag.{tag.decode('ascii')}", aux[position:end].decode("utf-8", "replace"))
            position = end + 1
        elif kind in _AUX_SIZE:
            position += _AUX_SIZE[kind]
        elif kind == b"B" and position + 5 <= len(aux) and aux[position:position + 1] in _AUX_SIZE:
            count = _U32.unpack_from(aux, position + 1)[0]
            position += 5 + count * _AUX_SIZE[aux[position:position + 1]]
        else:
            raise ClassificationError(f"{label}: a BAM record's tags are corrupt")
    if position != len(aux):
        raise ClassificationError(f"{label}: a BAM record's tags are corrupt")


def read_itf8(data: bytes, position: int) -> tuple[int, int]:
    """One CRAM ITF-8 integer (1-5 bytes, the count of leading 1 bits says how many follow)."""
    first = data[position]
    if first < 0x80:
        return first, position + 1
    if first < 0xC0:
        return (first & 0x3F) << 8 | data[position + 1], position + 2
    if first < 0xE0:
        return (first & 0x1F) << 16 | int.from_bytes(data[position + 1:position + 3], "big"), \
            position + 3
    if first < 0xF0:
        return (first & 0x0F) << 24 | int.from_bytes(data[position + 1:position + 4], "big"), \
            position + 4
    value = (first & 0x0F) << 28 | int.from_bytes(data[position + 1:position + 4], "big") << 4 \
        | data[position + 4] & 0x0F
    return value, position + 5


def read_ltf8(data: bytes, position: int) -> tuple[int, int]:
    """One CRAM LTF-8 integer (1-9 bytes, the count of leading 1 bits says how many follow)."""
    first = data[position]
    follow = 8 - (~first & 0xFF).bit_length()  # leading 1 bits
    value = first & (0xFF >> (follow + 1)) if follow < 8 else 0
    tail = data[position + 1:position + 1 + follow]
    if len(tail) < follow:
        raise IndexError(position)
    return value << (8 * follow) | int.from_bytes(tail, "big"), position + 1 + follow


def _cram(data: bytes, label: str, fields: dict[str, list[str]]) -> None:
    """The SAM header of a CRAM 3.x: the first block of the first container (CRAM 3.1 §6-8).
    No reference sequence is needed, and the records are not decoded."""
    if data[:4] != b"CRAM" or len(data) < 26:
        raise ClassificationError(f"{label}: not a CRAM file")
    if data[4] != 3:
        raise ClassificationError(f"{label}: CRAM {data[4]}.{data[5]} headers are not read by "
                                  "classification (3.0 and 3.1 are); convert it with samtools "
                                  "view -C --output-fmt-option version=3.1")
    try:
        start = position = 26
        position += 4  # container length
        for _ in range(4):  # reference id, start, span, records
            _, position = read_itf8(data, position)
        for _ in range(2):  # record counter, bases
            _, position = read_ltf8(data, position)
        _, position = read_itf8(data, position)  # blocks
        landmarks, position = read_itf8(data, position)
        for _ in range(landmarks):
            _, position = read_itf8(data, position)
        _check_crc(data, start, position, label, "container header")
        block = position + 4
        method, content = data[block], data[block + 1]
        _, position = read_itf8(data, block + 2)  # content id
        size, position = read_itf8(data, position)
        raw_size, position = read_itf8(data, position)
        payload = data[position:position + size]
        if len(payload) < size:
            raise _too_large(label, "CRAM")
        _check_crc(data, block, position + size, label, "SAM header block")
    except (IndexError, struct.error) as exc:
        raise _too_large(label, "CRAM") from exc
    if content != _CRAM_FILE_HEADER:
        raise ClassificationError(f"{label}: the first CRAM block is not the SAM header (corrupt "
                                  "file)")
    if raw_size > HEADER_PREFIX_BYTES:
        raise _too_large(label, "CRAM")
    text = payload if method == 0 else _inflate(method, payload, raw_size, label)
    if len(text) != raw_size or len(text) < 4:
        raise ClassificationError(f"{label}: the CRAM SAM header block is corrupt")
    length = _I32.unpack_from(text, 0)[0]
    if not 0 <= length <= len(text) - 4:
        raise ClassificationError(f"{label}: the CRAM SAM header block is corrupt")
    _sam_text(text[4:4 + length], fields)


def _inflate(method: int, payload: bytes, raw_size: int, label: str) -> bytes:
    """A compressed CRAM block, inflated to at most one byte more than it says it holds."""
    codec = _CRAM_CODECS.get(method)
    if codec is None:
        raise ClassificationError(f"{label}: the CRAM SAM header block uses compression method "
                                  f"{method}, which classification does not read; rewrite it "
                                  "with samtools view -C")
    try:
        return bytes(codec().decompress(payload, raw_size + 1))
    except (OSError, EOFError, ValueError, zlib.error, lzma.LZMAError) as exc:
        raise ClassificationError(f"{label}: the CRAM SAM header block is corrupt") from exc


def _check_crc(data: bytes, start: int, end: int, label: str, what: str) -> None:
    if zlib.crc32(data[start:end]) != _U32.unpack_from(data, end)[0]:
        raise ClassificationError(f"{label}: the CRAM {what} fails its CRC-32 (corrupt file)")


# --- VCF, BCF --------------------------------------------------------------------------------


def _vcf_text(text: str, label: str, fields: dict[str, list[str]]) -> None:
    """``##key=`` lines as ``meta.key`` fields, the #CHROM sample columns as ``samples``."""
    end = text.find("\n#CHROM")
    if end < 0:
        raise ClassificationError(f"{label}: VCF header has no #CHROM line in its first "
                                  f"{HEADER_PREFIX_BYTES} bytes")
    newline = text.find("\n", end + 1)
    for line in text[: newline if newline >= 0 else len(text)].split("\n"):
        line = line.rstrip("\r")
        if line.startswith("##"):
            key, sep, value = line[2:].partition("=")
            _add(fields, f"meta.{key}" if sep and _VCF_KEY.fullmatch(key)
                 else f"meta.{MALFORMED}", value)
        elif line.startswith("#CHROM"):
            fields["samples"] = line.split("\t")[9:]


def _vcf(data: bytes, label: str, fields: dict[str, list[str]]) -> None:
    _vcf_text(data.decode("utf-8", "replace"), label, fields)


def _bcf(data: bytes, label: str, fields: dict[str, list[str]]) -> None:
    """BCF 2.x: magic, uint32 length, then the VCF header text, NUL-terminated (VCF 4.3 §6.2)."""
    if data[:4] != b"BCF\x02" or len(data) < 9:
        raise ClassificationError(f"{label}: not a BCF 2 header")
    length = _U32.unpack_from(data, 5)[0]
    if 9 + length > len(data):
        raise _too_large(label, "BCF")
    _vcf_text(data[9:9 + length].rstrip(b"\x00").decode("utf-8", "replace"), label, fields)


# --- FASTQ -----------------------------------------------------------------------------------


def _fastq(data: bytes, label: str, fields: dict[str, list[str]]) -> None:
    """The names (before the first blank) of the first reads whose name line is complete."""
    lines = data.split(b"\n")
    for line in lines[0:max(1, len(lines) - 1):4][:RECORDS_SAMPLED]:
        parts = line[1:].split(maxsplit=1)
        _add(fields, "read_name", parts[0].decode("utf-8", "replace") if parts else "")


_PARSERS: Mapping[str, Callable[[bytes, str, dict[str, list[str]]], None]] = {
    "bam": _bam, "cram": _cram, "vcf": _vcf, "bcf": _bcf, "fastq": _fastq}
