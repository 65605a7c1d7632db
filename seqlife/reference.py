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
from collections.abc import Iterable, Iterator, Mapping
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


def _records(stream: BinaryIO, label: str) -> Iterator[tuple[str, Iterator[bytes]]]:
    """(name, chunks of raw sequence lines) per FASTA record, streamed."""
    line = stream.readline()
    if not line.startswith(b">"):
        raise CollectError(f"{label}: not a FASTA reference (it does not start with '>'). "
                           "Declare the FASTA file the CRAM files were made with.", path=label)
    state = {"line": line}

    def body() -> Iterator[bytes]:
        while True:
            current = stream.readline()
            if not current or current.startswith(b">"):
                state["line"] = current
                return
            yield current

    while state["line"]:
        name = state["line"][1:].split(maxsplit=1)
        if not name:
            raise CollectError(f"{label}: a FASTA record has no name.", path=label)
        chunks = body()
        yield name[0].decode("utf-8", "replace"), chunks
        for _ in chunks:  # a consumer that stopped early still moves on to the next record
            pass


def populate(fasta: Path, cache: Path, label: str) -> list[Sequence]:
    """Write every sequence of ``fasta`` (plain or gzip) into ``cache`` under its MD5.

    Streaming: memory is one line of the FASTA. A sequence already cached is checked, not
    rewritten (the file name is its checksum).
    """
    found: list[Sequence] = []
    with _open(fasta) as stream:
        for name, chunks in _records(stream, label):
            digest, length = hashlib.md5(usedforsecurity=False), 0
            part = cache / f".{os.getpid()}.part"
            cache.mkdir(parents=True, exist_ok=True)
            with open(part, "wb") as out:
                for chunk in chunks:
                    bases = chunk.translate(_UPPER, _DROP)
                    digest.update(bases)
                    length += len(bases)
                    out.write(bases)
            md5 = digest.hexdigest()
            target = cached_path(cache, md5)
            if target.exists():
                part.unlink()
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(part, target)
            found.append(Sequence(name, length, md5))
    if not found:
        raise CollectError(f"{label}: the FASTA reference holds no sequence.", path=label)
    return found


def missing(sequences: Iterable[Mapping[str, object]], cache: Path) -> list[str]:
    """The ``@SQ`` names (never more) whose sequence the cache cannot give htslib: no ``M5``
    tag (htslib would then fall back on a path in the file) or an ``M5`` not cached."""
    return [str(sq.get("SN")) for sq in sequences
            if not sq.get("M5") or not cached_path(cache, str(sq["M5"]).lower()).exists()]
