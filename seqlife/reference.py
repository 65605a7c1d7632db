"""Reference sequences for CRAM, found by the MD5 of each sequence and never fetched from a network.

A CRAM stores reads as differences from a reference genome, so decoding one (at intake, for the
identifier scan, for de-identification) needs that genome. htslib finds it through the ``M5``
checksum on every ``@SQ`` line, looked up in a local cache laid out as
``<cache>/<md5[0:2]>/<md5[2:4]>/<md5[4:]>`` (``REF_PATH``/``REF_CACHE``, as ``seq_cache_populate.pl``
writes it). Left unset, htslib asks the EBI's public server for every checksum: a request per
sequence that tells a third party which genome a hospital's files use, and fails offline. So
seqlife always points htslib at its own cache, which it fills from FASTA files declared in the
settings (``SEQLIFE_REFERENCE``) or delivered with the data (sample-sheet column ``reference``).

A reference genome is public data about no one; it is not stored with the dataset.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from seqlife.exceptions import CollectError

#: Sequence bytes read at a time while filling the cache.
_CHUNK = 1 << 20
_UPPER = bytes.maketrans(b"acgtnrykmswbdhv", b"ACGTNRYKMSWBDHV")
_DROP = b" \t\r\n"


@dataclass(frozen=True)
class Sequence:
    """One reference sequence: its name, length and the MD5 of its upper-case bases (SAM §1.3 M5)."""

    name: str
    length: int
    md5: str


def cache_template(cache: Path) -> str:
    """The ``REF_PATH``/``REF_CACHE`` pattern of ``cache``."""
    return f"{cache}/%2s/%2s/%s"


def cached_path(cache: Path, md5: str) -> Path:
    return cache / md5[:2] / md5[2:4] / md5[4:]


def use_cache(cache: Path, environ: dict[str, str] | os._Environ[str] = os.environ) -> None:
    """Point htslib at ``cache`` only: no lookup on the EBI server, no download."""
    cache.mkdir(parents=True, exist_ok=True)
    environ["REF_PATH"] = environ["REF_CACHE"] = cache_template(cache)


def _open(path: Path) -> BinaryIO:
    with open(path, "rb") as handle:
        gzipped = handle.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if gzipped else open(path, "rb")  # type: ignore[return-value]


#: A FASTA header line longer than this is refused (names are short; memory stays bounded).
_MAX_NAME_LINE = 1 << 16


def populate(fasta: Path, cache: Path, label: str, max_bytes: int = 1 << 40) -> list[Sequence]:
    """Write every sequence of ``fasta`` (plain or gzip) into ``cache`` under its MD5.

    Streaming in 1 MiB chunks, whatever the line length (a whole chromosome on one line is
    valid FASTA): memory is one chunk. A FASTA inflating past ``max_bytes`` is refused, and
    what it wrote so far removed. A sequence already cached is not rewritten (its file name is
    its checksum).
    """
    cache.mkdir(parents=True, exist_ok=True)
    found: list[Sequence] = []
    part = cache / f".{os.getpid()}.part"
    state: dict = {"name": None, "out": None, "md5": None, "length": 0, "total": 0}

    def close_sequence() -> None:
        if state["out"] is None:
            return
        state["out"].close()
        md5 = state["md5"].hexdigest()
        target = cached_path(cache, md5)
        if target.exists():
            part.unlink()
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(part, target)
        found.append(Sequence(state["name"], state["length"], md5))
        state.update(out=None, md5=None, length=0)

    try:
        with _open(fasta) as stream:
            header: bytearray | None = None
            at_line_start = True
            while chunk := stream.read(_CHUNK):
                position = 0
                while position < len(chunk):
                    if header is not None:  # inside a '>' line
                        end = chunk.find(b"\n", position)
                        header += chunk[position:end if end >= 0 else len(chunk)]
                        if len(header) > _MAX_NAME_LINE:
                            raise CollectError(f"{label}: a FASTA header line is longer than "
                                               f"{_MAX_NAME_LINE} bytes (not a reference?).",
                                               path=label)
                        if end < 0:
                            break
                        words = bytes(header).split(maxsplit=1)
                        if not words:
                            raise CollectError(f"{label}: a FASTA record has no name.",
                                               path=label)
                        close_sequence()
                        state.update(name=words[0].decode("utf-8", "replace"),
                                     out=open(part, "wb"),
                                     md5=hashlib.md5(usedforsecurity=False))
                        header, position, at_line_start = None, end + 1, True
                        continue
                    if at_line_start and chunk[position:position + 1] == b">":
                        header, position = bytearray(), position + 1
                        continue
                    if state["out"] is None:
                        raise CollectError(f"{label}: not a FASTA reference (it does not start "
                                           "with '>'). Declare the FASTA file the CRAM files "
                                           "were made with.", path=label)
                    end = chunk.find(b"\n>", position)
                    stop = end + 1 if end >= 0 else len(chunk)
                    bases = chunk[position:stop].translate(_UPPER, _DROP)
                    state["md5"].update(bases)
                    state["out"].write(bases)
                    state["length"] += len(bases)
                    state["total"] += len(bases)
                    if state["total"] > max_bytes:
                        raise CollectError(f"{label}: the FASTA reference holds more than "
                                           f"{max_bytes >> 30} GiB of sequence (a decompression "
                                           "bomb?).", path=label)
                    at_line_start = chunk[stop - 1:stop] == b"\n"
                    position = stop
            if header is not None:
                raise CollectError(f"{label}: the FASTA ends inside a header line.", path=label)
            close_sequence()
    except BaseException:
        if state["out"] is not None:
            state["out"].close()
        part.unlink(missing_ok=True)
        raise
    if not found:
        raise CollectError(f"{label}: the FASTA reference holds no sequence.", path=label)
    return found


def missing(sequences: Iterable[Mapping[str, object]], cache: Path) -> list[str]:
    """The ``@SQ`` names (never more) whose sequence the cache cannot give htslib: no ``M5``
    tag (htslib would then fall back on a path in the file), one that is not an MD5, or one not
    cached."""
    return [str(sq.get("SN")) for sq in sequences
            if not _MD5.fullmatch(str(sq.get("M5", "")).lower())
            or not cached_path(cache, str(sq["M5"]).lower()).exists()]


#: An M5 value is 32 hex digits; anything else (``../``) would make htslib read outside the cache.
_MD5 = re.compile(r"[0-9a-f]{32}")
