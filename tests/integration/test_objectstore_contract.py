"""One contract, two real stores: a local versioned directory and S3 (SeaweedFS over HTTP).

GB/T 39725 §11.3.4.6 b 3 (versions kept, never overwritten); §11.3.4.6 a 3 (integrity checks).
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import pytest

from infra.objectstore import S3_PART, LocalObjectStore, ObjectStore, open_store
from seqlife.exceptions import IntegrityError, ObjectNotFound, StorageError


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    if request.param == "local":
        return LocalObjectStore(tmp_path / "store")
    return open_store(request.getfixturevalue("s3_store_url"),
                      request.getfixturevalue("s3_endpoint"))


def test_put_records_sha256_and_size(store: ObjectStore) -> None:
    version = store.put_bytes("raw/a.txt", b"hello")
    assert version.sha256 == hashlib.sha256(b"hello").hexdigest()
    assert version.size == 5
    assert store.head("raw/a.txt").version_id == version.version_id


def test_second_put_adds_a_version_and_keeps_the_first(store: ObjectStore) -> None:
    """GB/T 39725 §11.3.4.6 b 3: intermediate versions are kept, never overwritten."""
    first = store.put_bytes("raw/a.txt", b"one")
    second = store.put_bytes("raw/a.txt", b"two")
    assert first.version_id != second.version_id
    versions = store.list_versions("raw/a.txt")
    assert [v.version_id for v in versions] == [second.version_id, first.version_id]
    assert [v.is_latest for v in versions] == [True, False]
    assert store.get_bytes("raw/a.txt") == b"two"
    assert store.get_bytes("raw/a.txt", first.version_id) == b"one"


def test_large_object_streams_in_parts_and_round_trips(store: ObjectStore, tmp_path: Path) -> None:
    payload = os.urandom(S3_PART + 12345)  # crosses the multipart boundary on S3
    version = store.put("big/blob.bin", io.BytesIO(payload))
    assert version.size == len(payload)
    assert store.get_bytes("big/blob.bin") == payload


def test_put_refuses_bytes_that_do_not_match_the_expected_digest(store: ObjectStore) -> None:
    with pytest.raises(IntegrityError, match="changed while they were being stored"):
        store.put("raw/x.bin", io.BytesIO(b"actual"), expected_sha256="0" * 64)
    assert [v for v in store.list_versions("raw/x.bin") if v.key == "raw/x.bin"] == []


def test_list_versions_by_prefix(store: ObjectStore) -> None:
    store.put_bytes("d1/a", b"1")
    store.put_bytes("d1/b", b"2")
    store.put_bytes("d2/a", b"3")
    assert sorted(v.key for v in store.list_versions("d1/")) == ["d1/a", "d1/b"]


def test_delete_one_version_leaves_the_others(store: ObjectStore) -> None:
    first = store.put_bytes("k", b"one")
    second = store.put_bytes("k", b"two")
    store.delete_version("k", second.version_id)
    assert [v.version_id for v in store.list_versions("k")] == [first.version_id]
    with pytest.raises(ObjectNotFound):
        store.get_bytes("k", second.version_id)


def test_purge_removes_every_version_of_a_key_only(store: ObjectStore) -> None:
    for body in (b"1", b"2", b"3"):
        store.put_bytes("gone/k", body)
    store.put_bytes("gone/k2", b"stays")
    assert store.purge("gone/k") >= 3
    assert [v.key for v in store.list_versions("gone/")] == ["gone/k2"]
    with pytest.raises(ObjectNotFound):
        store.head("gone/k")


@pytest.mark.parametrize("key", ["../escape", "/abs", "a//b", "a/./b", "a\\b", "x.versions/y", ""])
def test_keys_that_could_escape_are_refused(store: ObjectStore, key: str) -> None:
    with pytest.raises(StorageError, match="Refused object key"):
        store.put_bytes(key, b"x")


def test_missing_object_is_a_typed_error(store: ObjectStore) -> None:
    with pytest.raises(ObjectNotFound):
        store.get_bytes("nothing/here")


def test_local_tampered_byte_stops_the_read(tmp_path: Path) -> None:
    """GB/T 39725 §11.3.4.6 a 3: a changed byte is detected on read."""
    store = LocalObjectStore(tmp_path / "store")
    version = store.put_bytes("raw/a.bin", b"A" * 1000)
    data_file = tmp_path / "store" / "objects" / "raw" / "a.bin.versions" / version.version_id
    os.chmod(data_file, 0o644)
    data_file.write_bytes(b"A" * 999 + b"B")
    with pytest.raises(IntegrityError, match="does not match its recorded SHA-256"):
        store.get_bytes("raw/a.bin")


def test_local_partial_write_is_never_visible(tmp_path: Path) -> None:
    """A writer that dies mid-stream leaves no version behind."""
    store = LocalObjectStore(tmp_path / "store")

    class Dies(io.RawIOBase):
        calls = 0

        def read(self, size: int = -1) -> bytes:
            self.calls += 1
            if self.calls > 2:
                raise OSError("disk unplugged")
            return b"x" * 1024

    with pytest.raises(OSError):
        store.put("raw/partial", Dies())  # type: ignore[arg-type]
    assert store.list_versions("raw/") == []
    assert list((tmp_path / "store" / "tmp").iterdir()) == []


@pytest.mark.s3
def test_s3_store_refuses_an_unversioned_bucket(s3_endpoint: str) -> None:
    import boto3

    client = boto3.client("s3", endpoint_url=s3_endpoint)
    client.create_bucket(Bucket="seqlife-unversioned")
    with pytest.raises(StorageError, match="does not keep versions"):
        open_store("s3://seqlife-unversioned", s3_endpoint)


@pytest.mark.s3
def test_s3_unreachable_endpoint_is_transient() -> None:
    from seqlife.exceptions import StorageUnavailable, Transient

    with pytest.raises(StorageUnavailable) as caught:
        open_store("s3://nobucket", "http://127.0.0.1:9")
    assert isinstance(caught.value, Transient)
