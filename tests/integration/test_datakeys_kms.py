"""Data keys wrapped by AWS KMS through boto3, against a KMS endpoint over HTTP on 127.0.0.1
(GB/T 39725 §10.1 g: keys apart from data; §8.3 Table 5: rotation)."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import boto3
import pytest

from infra.datakeys import (
    DataKeys,
    KeyUnavailable,
    KmsMaster,
    LocalMaster,
    MasterKeyMismatch,
    open_master,
)
from seqlife.encrypt import c4gh
from seqlife.settings import Settings


@pytest.fixture
def kms_key(kms_endpoint: str) -> str:
    client = boto3.client("kms", endpoint_url=kms_endpoint, region_name="us-east-1")
    return client.create_key(Description="seqlife test master")["KeyMetadata"]["KeyId"]


def test_settings_choose_kms_and_the_wrapped_key_is_bound_to_its_dataset(
        tmp_path: Path, kms_endpoint: str, kms_key: str) -> None:
    settings = replace(Settings.from_env({"SEQLIFE_HOME": str(tmp_path)}), kms_key_id=kms_key,
                       kms_endpoint_url=kms_endpoint)
    master = open_master(settings)
    assert isinstance(master, KmsMaster)
    keys = DataKeys(tmp_path / "keys", master)
    public = keys.public_key("cohort")
    secret = keys.secret_key("cohort")
    assert c4gh.public_key_of(secret) == public
    record = json.loads((tmp_path / "keys" / "data-keys" / "cohort.json").read_text())
    assert secret.hex() not in json.dumps(record) and record["kek"] == kms_key
    assert oct((tmp_path / "keys" / "data-keys" / "cohort.json").stat().st_mode & 0o777) == "0o600"
    # a wrapped key copied to another dataset's name does not unwrap (encryption context)
    (tmp_path / "keys" / "data-keys" / "other.json").write_text(
        json.dumps({**record, "dataset": "other"}))
    with pytest.raises(MasterKeyMismatch):
        keys.secret_key("other")


def test_rotation_from_local_to_kms_and_to_a_new_kms_key(tmp_path: Path, kms_endpoint: str,
                                                          kms_key: str) -> None:
    local = LocalMaster(os.urandom(32))
    keys = DataKeys(tmp_path / "keys", local)
    secrets = {name: (keys.public_key(name), keys.secret_key(name)) for name in ("a", "b")}
    assert keys.rotate(KmsMaster(kms_key, kms_endpoint)) == 2
    assert keys.rotate(KmsMaster(kms_key, kms_endpoint)) == 0  # already done: resumable
    second = boto3.client("kms", endpoint_url=kms_endpoint, region_name="us-east-1") \
        .create_key()["KeyMetadata"]["KeyId"]
    assert keys.rotate(KmsMaster(second, kms_endpoint)) == 2
    for name, (public, secret) in secrets.items():
        assert keys.secret_key(name) == secret and keys.public_key(name) == public
    with pytest.raises(MasterKeyMismatch):
        DataKeys(tmp_path / "keys", local).secret_key("a")


def test_unreachable_kms_is_a_transient_error(tmp_path: Path) -> None:
    keys = DataKeys(tmp_path / "keys", KmsMaster("alias/none", "http://127.0.0.1:9"))
    with pytest.raises(KeyUnavailable, match="could not be reached"):
        keys.public_key("cohort")
