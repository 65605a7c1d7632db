"""Sweep everything a deployment keeps at rest for subjects' identifiers and raw reads in clear.

Used after whole lifecycles (issue 17, GB/T 39725 §10.1 g, §10.2 a): every file under
``SEQLIFE_HOME`` (catalog, store, lineage registry with its git objects and DVC cache, backups,
scratch, key store, Prefect database) and, given an S3 client, every object version of a bucket,
is read decompressed — gzip/BGZF members, zlib (git loose objects), git packs (through ``git
cat-file``), Parquet (decoded to text), zip members (``.xlsx``) — and searched with the
de-identifier's own scanner, so an identifier written in GB18030, percent-encoded, full-width or
hex is found too. File and object *names* are searched as well. A clear BAM, CRAM or BCF anywhere
is itself a finding: its reads are packed where a text search cannot see them.
"""

from __future__ import annotations

import gzip
import io
import subprocess
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path

import pyarrow.parquet as pq

from seqlife.deidentify.residual import Scanner

CLEAR_ALIGNMENTS = (b"BAM\x01", b"CRAM", b"BCF\x02")


def _gunzip_all(data: bytes) -> bytes:
    """Every member of a gzip/BGZF stream (zlib's gzip module stops at none)."""
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error):
        return b""


def _zlib(data: bytes) -> bytes:
    try:
        return zlib.decompressobj().decompress(data, 1 << 28)
    except zlib.error:
        return b""


def _parquet_text(data: bytes) -> bytes:
    try:
        table = pq.read_table(io.BytesIO(data))
    except Exception:  # noqa: BLE001 - anything pyarrow cannot read is scanned as bytes only
        return b""
    return table.to_pandas().to_csv(index=False).encode("utf-8")


def _zip_members(data: bytes) -> Iterator[bytes]:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            for name in archive.namelist():
                yield archive.read(name)
    except (zipfile.BadZipFile, OSError, zlib.error):
        return


def views(data: bytes) -> Iterator[bytes]:
    """The bytes and every decoding of them a reader could apply, recursively once."""
    yield data
    inner: list[bytes] = []
    if data[:2] == b"\x1f\x8b":
        inner.append(_gunzip_all(data))
    elif data[:1] == b"\x78":
        inner.append(_zlib(data))
    elif data[:4] == b"PAR1":
        inner.append(_parquet_text(data))
    elif data[:2] == b"PK":
        inner.extend(_zip_members(data))
    for blob in inner:
        if blob:
            yield blob
            if blob[:2] == b"\x1f\x8b" or blob[:4] == b"PAR1":
                yield from views(blob)


def git_objects(repo: Path) -> bytes:
    """Every object of a git repository, decompressed (packs included)."""
    listed = subprocess.run(["git", "-C", str(repo), "cat-file", "--batch-all-objects",
                             "--batch"], capture_output=True, check=True)
    return listed.stdout


def findings(places: Iterable[tuple[str, bytes]], scanner: Scanner) -> list[tuple[str, str]]:
    """(where, what) for each place holding an identifier, a raw read or a clear alignment."""
    found = []
    for where, data in places:
        for view in views(data):
            if view[:4] in CLEAR_ALIGNMENTS:
                found.append((where, "clear alignment/variant file"))
                break
            if next(scanner.offsets([view]), None) is not None:
                found.append((where, "identifier or raw read"))
                break
    return found


def home_places(home: Path, skip: tuple[str, ...] = ("demo",)) -> Iterator[tuple[str, bytes]]:
    """Every file under the home (names and contents) except the intake folders ``skip``; the
    git repositories it holds are read object by object."""
    for path in sorted(home.rglob("*")):
        relative = path.relative_to(home)
        if relative.parts[0] in skip:
            continue
        yield f"name {relative}", str(relative).encode("utf-8")
        if path.is_dir() and path.name == ".git":
            yield f"git objects of {relative.parent}", git_objects(path.parent)
        elif path.is_file():
            yield str(relative), path.read_bytes()


def bucket_places(client: object, bucket: str) -> Iterator[tuple[str, bytes]]:
    """Every version of every object in an S3 bucket, with its key."""
    paginator = client.get_paginator("list_object_versions")  # type: ignore[attr-defined]
    for page in paginator.paginate(Bucket=bucket):
        for version in page.get("Versions", []):
            key, version_id = version["Key"], version["VersionId"]
            yield f"s3 name {key}", key.encode("utf-8")
            body = client.get_object(Bucket=bucket, Key=key,  # type: ignore[attr-defined]
                                     VersionId=version_id)["Body"].read()
            yield f"s3 {key}@{version_id}", body


def raw_reads(fastq_paths: Iterable[Path], per_file: int = 200) -> set[str]:
    """Read sequences taken from raw FASTQ files (the first ``per_file`` of each), 30 bases or
    more so that no chance match in other data can be mistaken for one."""
    reads: set[str] = set()
    for path in fastq_paths:
        with gzip.open(path, "rt") as handle:
            for number, line in enumerate(handle):
                if number % 4 == 1 and len(line.strip()) >= 30:
                    reads.add(line.strip())
                if number >= per_file * 4:
                    break
    return reads
