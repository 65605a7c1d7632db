"""Versioned object store: a local directory (embedded default) and S3 through boto3 (production).

Both keep every version and never overwrite one (GB/T 39725 §11.3.4.6 b 3), record the SHA-256 of
what they wrote, stream in constant memory, and verify the digest again on every full read.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import tempfile
import time
from abc import ABC, abstractmethod
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO, Iterator
from urllib.parse import urlparse

from seqlife.exceptions import (
    IntegrityError,
    ObjectNotFound,
    StorageError,
    StorageUnavailable,
)

CHUNK = 1 << 20
S3_PART = 16 << 20
_VERSIONS_SUFFIX = ".versions"


@dataclass(frozen=True)
class ObjectVersion:
    """One stored version of one key."""

    key: str
    version_id: str
    size: int
    sha256: str
    created_at: datetime
    is_latest: bool


def check_key(key: str) -> str:
    """Refuse keys that could escape the store or collide with its own layout."""
    parts = key.split("/")
    if (
        not key
        or key.startswith("/")
        or "\\" in key
        or "\x00" in key
        or any(part in ("", ".", "..") or part.endswith(_VERSIONS_SUFFIX) for part in parts)
    ):
        raise StorageError(f"Refused object key '{key[:120]}': empty segment, '..' or reserved name.")
    return key


class _VerifyingReader:
    """File-like wrapper that checks the SHA-256 when the last byte has been read."""

    def __init__(self, raw: BinaryIO, expected_sha256: str, key: str) -> None:
        self._raw, self._expected, self._key = raw, expected_sha256, key
        self._hash = hashlib.sha256()
        self._done = False

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self._hash.update(data)
        if (not data or size is None or size < 0) and not self._done:
            self._done = True
            if self._hash.hexdigest() != self._expected:
                raise IntegrityError(
                    f"Object '{self._key}' does not match its recorded SHA-256: it was altered or "
                    "damaged in storage. The read was stopped; restore it from backup "
                    "(GB/T 39725 §11.3.4.6 a 3).",
                    key=self._key,
                )
        return data

    def readinto(self, buffer: bytearray | memoryview) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def readable(self) -> bool:
        return True


def _sha256_of_stream(stream: BinaryIO) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    while chunk := stream.read(CHUNK):
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


class ObjectStore(ABC):
    """What every store offers; stages depend only on this."""

    url: str

    @abstractmethod
    def put(self, key: str, source: BinaryIO, *, expected_sha256: str | None = None) -> ObjectVersion:
        """Stream ``source`` into a new version of ``key``; refuse if it does not hash as expected."""

    @abstractmethod
    def _open_raw(self, key: str, version_id: str | None) -> tuple[BinaryIO, ObjectVersion]:
        """The raw byte stream of a version and its metadata."""

    @abstractmethod
    def list_versions(self, prefix: str = "") -> list[ObjectVersion]:
        """Every version under ``prefix``, newest first within each key."""

    @abstractmethod
    def delete_version(self, key: str, version_id: str) -> None:
        """Delete one version for good."""

    @abstractmethod
    def purge(self, key: str) -> int:
        """Delete every version (and delete marker) of exactly ``key``; return how many went."""

    def remnants(self, prefix: str) -> list[str]:
        """Keys under ``prefix`` that still hold any version or delete marker (destroy checks)."""
        return sorted({v.key for v in self.list_versions(prefix)})

    def head(self, key: str, version_id: str | None = None) -> ObjectVersion:
        """Metadata of one version (the latest by default)."""
        versions = [v for v in self.list_versions(check_key(key)) if v.key == key]
        for version in versions:
            if version_id is None or version.version_id == version_id:
                return version
        raise ObjectNotFound(f"No object '{key}'" + (f" version {version_id}" if version_id else "") + ".")

    @contextmanager
    def open(self, key: str, version_id: str | None = None) -> Iterator[BinaryIO]:
        """Read a version; a full read raises IntegrityError if the bytes were altered."""
        raw, version = self._open_raw(check_key(key), version_id)
        try:
            yield _VerifyingReader(raw, version.sha256, key)  # type: ignore[misc]
        finally:
            raw.close()

    def put_bytes(self, key: str, data: bytes) -> ObjectVersion:
        import io

        return self.put(key, io.BytesIO(data))

    def get_bytes(self, key: str, version_id: str | None = None) -> bytes:
        with self.open(key, version_id) as stream:
            return stream.read()


class LocalObjectStore(ObjectStore):
    """A versioned directory: ``objects/<key>.versions/<version_id>`` plus a JSON sidecar.

    A version becomes visible only once its sidecar is renamed into place, so a crash mid-write never
    leaves a partial object that looks complete. Written files are made read-only.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.url = self.root.resolve().as_uri()
        (self.root / "objects").mkdir(parents=True, exist_ok=True)
        (self.root / "tmp").mkdir(parents=True, exist_ok=True)

    def _dir(self, key: str) -> Path:
        return self.root / "objects" / (check_key(key) + _VERSIONS_SUFFIX)

    def put(self, key: str, source: BinaryIO, *, expected_sha256: str | None = None) -> ObjectVersion:
        target_dir = self._dir(key)
        target_dir.mkdir(parents=True, exist_ok=True)
        version_id = f"{time.time_ns():020d}-{secrets.token_hex(4)}"
        digest, size = hashlib.sha256(), 0
        with tempfile.NamedTemporaryFile(dir=self.root / "tmp", delete=False) as tmp:
            try:
                while chunk := source.read(CHUNK):
                    digest.update(chunk)
                    size += len(chunk)
                    tmp.write(chunk)
                tmp.flush()
                os.fsync(tmp.fileno())
            except BaseException:
                os.unlink(tmp.name)
                raise
        sha256 = digest.hexdigest()
        if expected_sha256 is not None and sha256 != expected_sha256:
            os.unlink(tmp.name)
            raise IntegrityError(
                f"Bytes sent for '{key}' changed while they were being stored (SHA-256 differs "
                "from the one validated). Nothing was stored; collect again.",
                key=key,
            )
        data_path = target_dir / version_id
        os.chmod(tmp.name, 0o444)
        os.replace(tmp.name, data_path)
        created = datetime.fromtimestamp(int(version_id[:20]) / 1e9, tz=timezone.utc)
        meta = {"key": key, "version_id": version_id, "size": size, "sha256": sha256,
                "created_at": created.isoformat()}
        meta_tmp = target_dir / f".{version_id}.json.tmp"
        meta_tmp.write_text(json.dumps(meta), encoding="utf-8")
        os.replace(meta_tmp, target_dir / f"{version_id}.json")
        return ObjectVersion(key, version_id, size, sha256, created, True)

    def _versions_in(self, target_dir: Path) -> list[ObjectVersion]:
        metas = sorted(target_dir.glob("*.json"), reverse=True)
        out = []
        for index, meta_path in enumerate(metas):
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            out.append(ObjectVersion(meta["key"], meta["version_id"], meta["size"], meta["sha256"],
                                     datetime.fromisoformat(meta["created_at"]), index == 0))
        return out

    def head(self, key: str, version_id: str | None = None) -> ObjectVersion:
        """One key's own folder is read, not the whole store (constant cost per read)."""
        target_dir = self._dir(key)
        for version in self._versions_in(target_dir) if target_dir.exists() else []:
            if version_id is None or version.version_id == version_id:
                return version
        raise ObjectNotFound(f"No object '{key}'" + (f" version {version_id}" if version_id else "")
                             + ".")

    def list_versions(self, prefix: str = "") -> list[ObjectVersion]:
        objects = self.root / "objects"
        base = objects / prefix.rsplit("/", 1)[0] if "/" in prefix else objects
        out: list[ObjectVersion] = []
        if not base.exists():
            return out
        for target_dir in sorted(base.rglob("*" + _VERSIONS_SUFFIX)):
            key = target_dir.relative_to(objects).as_posix()[: -len(_VERSIONS_SUFFIX)]
            if key.startswith(prefix):
                out.extend(self._versions_in(target_dir))
        return out

    def _open_raw(self, key: str, version_id: str | None) -> tuple[BinaryIO, ObjectVersion]:
        version = self.head(key, version_id)
        try:
            return open(self._dir(key) / version.version_id, "rb"), version
        except FileNotFoundError as exc:
            raise ObjectNotFound(f"Object '{key}' version {version.version_id} lost its data.") from exc

    def delete_version(self, key: str, version_id: str) -> None:
        target_dir = self._dir(key)
        meta_path = target_dir / f"{version_id}.json"
        if not meta_path.exists():
            raise ObjectNotFound(f"No object '{key}' version {version_id}.")
        meta_path.unlink()  # invisible first, then gone
        (target_dir / version_id).unlink(missing_ok=True)
        if not any(target_dir.iterdir()):
            target_dir.rmdir()

    def purge(self, key: str) -> int:
        target_dir = self._dir(key)
        if not target_dir.exists():
            return 0
        count = len(list(target_dir.glob("*.json")))
        shutil.rmtree(target_dir)
        return count


def s3_client(endpoint_url: str | None) -> object:
    """The boto3 S3 client of the store; making one opens no connection, so the residency
    check reads its resolved ``meta.endpoint_url`` before the store is used."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        config=Config(retries={"max_attempts": 3, "mode": "standard"},
                      connect_timeout=5, read_timeout=60),
    )


class S3ObjectStore(ObjectStore):
    """S3 (or any S3-compatible server) on a bucket with versioning enabled."""

    def __init__(self, bucket: str, prefix: str = "", endpoint_url: str | None = None,
                 client: object | None = None) -> None:
        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.url = f"s3://{bucket}" + (f"/{self.prefix}" if self.prefix else "")
        self.client = client or s3_client(endpoint_url)

    @classmethod
    def from_url(cls, url: str, endpoint_url: str | None) -> "S3ObjectStore":
        parsed = urlparse(url)
        return cls(parsed.netloc, parsed.path, endpoint_url)

    @contextmanager
    def _errors(self, key: str) -> Iterator[None]:
        from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError

        try:
            yield
        except EndpointConnectionError as exc:
            raise StorageUnavailable(f"The S3 store {self.url} cannot be reached; retry later.") from exc
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchKey", "NoSuchVersion", "404", "NotFound"):
                raise ObjectNotFound(f"No object '{key}' in {self.url}.") from exc
            if code in ("SlowDown", "ServiceUnavailable", "InternalError", "503", "500"):
                raise StorageUnavailable(f"The S3 store {self.url} is busy ({code}); retry later.") from exc
            raise StorageError(f"The S3 store {self.url} refused an operation on '{key}' ({code}).") from exc
        except BotoCoreError as exc:
            raise StorageUnavailable(f"The S3 store {self.url} failed ({exc.__class__.__name__}).") from exc

    def _full(self, key: str) -> str:
        return f"{self.prefix}/{check_key(key)}" if self.prefix else check_key(key)

    def _short(self, full_key: str) -> str:
        return full_key[len(self.prefix) + 1:] if self.prefix else full_key

    def ensure_bucket(self) -> None:
        """Create the bucket if needed and refuse to run on one that does not keep versions."""
        from botocore.exceptions import ClientError

        with self._errors(""):
            try:
                self.client.head_bucket(Bucket=self.bucket)
            except ClientError:  # 404: the bucket does not exist yet
                self.client.create_bucket(Bucket=self.bucket)
                self.client.put_bucket_versioning(
                    Bucket=self.bucket, VersioningConfiguration={"Status": "Enabled"})
            status = self.client.get_bucket_versioning(Bucket=self.bucket).get("Status")
        if status != "Enabled":
            raise StorageError(
                f"Bucket '{self.bucket}' does not keep versions; seqlife never overwrites data "
                "(GB/T 39725 §11.3.4.6 b 3). Enable versioning on it."
            )

    def put(self, key: str, source: BinaryIO, *, expected_sha256: str | None = None) -> ObjectVersion:
        full = self._full(key)
        if expected_sha256 is None:
            with tempfile.TemporaryFile() as spool:  # the digest must be known before the upload
                shutil.copyfileobj(source, spool, CHUNK)
                spool.seek(0)
                expected_sha256, _ = _sha256_of_stream(spool)
                spool.seek(0)
                return self._upload(key, full, spool, expected_sha256)
        return self._upload(key, full, source, expected_sha256)

    def _upload(self, key: str, full: str, source: BinaryIO, sha256: str) -> ObjectVersion:
        digest, size = hashlib.sha256(), 0
        first = source.read(S3_PART)
        digest.update(first)
        size += len(first)
        with self._errors(key):
            if len(first) < S3_PART:
                response = self.client.put_object(
                    Bucket=self.bucket, Key=full, Body=first, Metadata={"sha256": sha256})
            else:
                response = self._multipart(full, first, source, digest, sha256)
                size = response.pop("_size")
        if digest.hexdigest() != sha256:
            with self._errors(key):
                self.client.delete_object(Bucket=self.bucket, Key=full, VersionId=response["VersionId"])
            raise IntegrityError(
                f"Bytes sent for '{key}' changed while they were being stored (SHA-256 differs "
                "from the one validated). Nothing was stored; collect again.",
                key=key,
            )
        return ObjectVersion(key, response["VersionId"], size, sha256, datetime.now(timezone.utc), True)

    def _multipart(self, full: str, first: bytes, source: BinaryIO, digest: "hashlib._Hash",
                   sha256: str) -> dict:
        upload = self.client.create_multipart_upload(
            Bucket=self.bucket, Key=full, Metadata={"sha256": sha256})
        upload_id, parts, part, size = upload["UploadId"], [], first, 0
        try:
            number = 1
            while part:
                result = self.client.upload_part(Bucket=self.bucket, Key=full, UploadId=upload_id,
                                                 PartNumber=number, Body=part)
                parts.append({"ETag": result["ETag"], "PartNumber": number})
                size += len(part)
                part = source.read(S3_PART)
                digest.update(part)
                number += 1
            response = self.client.complete_multipart_upload(
                Bucket=self.bucket, Key=full, UploadId=upload_id, MultipartUpload={"Parts": parts})
        except BaseException:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=full, UploadId=upload_id)
            raise
        response["_size"] = size
        return response

    def list_versions(self, prefix: str = "") -> list[ObjectVersion]:
        full_prefix = f"{self.prefix}/{prefix}" if self.prefix else prefix
        out: list[ObjectVersion] = []
        with self._errors(prefix):
            paginator = self.client.get_paginator("list_object_versions")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=full_prefix):
                for item in page.get("Versions", []):
                    head = self.client.head_object(
                        Bucket=self.bucket, Key=item["Key"], VersionId=item["VersionId"])
                    out.append(ObjectVersion(
                        self._short(item["Key"]), item["VersionId"], item["Size"],
                        head.get("Metadata", {}).get("sha256", ""), item["LastModified"],
                        item["IsLatest"]))
        return out  # S3 lists each key's versions newest first

    def _open_raw(self, key: str, version_id: str | None) -> tuple[BinaryIO, ObjectVersion]:
        version = self.head(key, version_id)
        with self._errors(key):
            body = self.client.get_object(
                Bucket=self.bucket, Key=self._full(key), VersionId=version.version_id)["Body"]
        return body, version

    def head(self, key: str, version_id: str | None = None) -> ObjectVersion:
        full = self._full(key)
        with self._errors(key):
            args = {"Bucket": self.bucket, "Key": full}
            latest = self.client.head_object(**args)
            item = latest if version_id in (None, latest.get("VersionId")) else \
                self.client.head_object(**args, VersionId=version_id)
        return ObjectVersion(key, item["VersionId"], item["ContentLength"],
                             item.get("Metadata", {}).get("sha256", ""), item["LastModified"],
                             item["VersionId"] == latest["VersionId"])

    def delete_version(self, key: str, version_id: str) -> None:
        self.head(key, version_id)
        with self._errors(key):
            self.client.delete_object(Bucket=self.bucket, Key=self._full(key), VersionId=version_id)

    def remnants(self, prefix: str) -> list[str]:
        """Versions and delete markers both count: a marker alone still names the key."""
        full_prefix = f"{self.prefix}/{prefix}" if self.prefix else prefix
        keys = set()
        with self._errors(prefix):
            for page in self.client.get_paginator("list_object_versions").paginate(
                    Bucket=self.bucket, Prefix=full_prefix):
                for item in page.get("Versions", []) + page.get("DeleteMarkers", []):
                    keys.add(self._short(item["Key"]))
        return sorted(keys)

    def purge(self, key: str) -> int:
        full = self._full(key)
        doomed = []
        with self._errors(key):
            for page in self.client.get_paginator("list_object_versions").paginate(
                    Bucket=self.bucket, Prefix=full):
                for item in page.get("Versions", []) + page.get("DeleteMarkers", []):
                    if item["Key"] == full:
                        doomed.append({"Key": full, "VersionId": item["VersionId"]})
            for start in range(0, len(doomed), 1000):
                result = self.client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": doomed[start:start + 1000], "Quiet": True})
                if result.get("Errors"):
                    raise StorageError(f"The S3 store refused to delete some versions of '{key}'.")
        return len(doomed)


def open_store(url: str, s3_endpoint_url: str | None = None) -> ObjectStore:
    """The store named by a ``file://`` or ``s3://`` URL."""
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return LocalObjectStore(Path(parsed.path))
    if parsed.scheme == "s3":
        store = S3ObjectStore.from_url(url, s3_endpoint_url)
        store.ensure_bucket()
        return store
    raise StorageError(f"Unsupported store URL scheme '{parsed.scheme}'.")
