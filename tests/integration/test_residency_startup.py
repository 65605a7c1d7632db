"""Residency at start-up (GB/T 39725 §7 q): ``build_resources`` checks the store, catalog, KMS and
backup locations the adapters would reach before opening any of them."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from infra.resources import build_resources, data_locations
from seqlife import residency
from seqlife.exceptions import ResidencyViolation
from seqlife.settings import Settings

POLICY = residency.load_residency_policy()


def settings_for(tmp_path: Path, **env: str) -> Settings:
    return Settings.from_env({"SEQLIFE_HOME": str(tmp_path / "home"), **env})


@pytest.fixture(autouse=True)
def fresh_cache():
    build_resources.cache_clear()
    yield
    build_resources.cache_clear()


def test_the_embedded_default_passes_and_opens(tmp_path: Path) -> None:
    """§7 q: SQLite, the local store, key store and backups are this machine's disks."""
    settings = settings_for(tmp_path)
    assert {loc.what for loc in data_locations(settings)} == {
        "catalog", "object store", "key store", "data backups", "key backups"}
    build_resources(settings).engine.dispose()


@pytest.mark.parametrize("backend", ["production"], indirect=True)
def test_loopback_postgresql_and_s3_pass(resources) -> None:
    """§7 q: the test services on 127.0.0.1 (PostgreSQL, SeaweedFS S3) are on this machine."""
    kinds = {loc.what: loc.url for loc in data_locations(resources.settings)}
    assert kinds["object store"].startswith("http://127.0.0.1:")
    assert resources.store.url.startswith("s3://")


@pytest.mark.parametrize("endpoint", ["https://s3.us-east-1.amazonaws.com",
                                      "https://oss-us-west-1.aliyuncs.com"])
def test_a_foreign_s3_endpoint_is_refused_before_anything_opens(tmp_path: Path,
                                                                 endpoint: str) -> None:
    """§7 q: a store abroad is refused at start-up with the clause; no catalog is created and
    no connection made (the foreign host is never contacted)."""
    settings = settings_for(tmp_path, SEQLIFE_STORE_URL="s3://cohort",
                            SEQLIFE_S3_ENDPOINT_URL=endpoint)
    with pytest.raises(ResidencyViolation, match="GB/T 39725 §7 q") as refused:
        build_resources(settings)
    assert "object store (SEQLIFE_S3_ENDPOINT_URL)" in refused.value.message
    assert not settings.home.exists()


def test_an_in_country_s3_endpoint_from_the_policy_passes(tmp_path: Path) -> None:
    """§7 q: an endpoint built from the policy's own pattern and region is allowed."""
    pattern = next(p for p in POLICY["region_endpoints"] if p.startswith("s3."))
    endpoint = "https://" + pattern.format(region=POLICY["allowed_regions"][0])
    settings = settings_for(tmp_path, SEQLIFE_STORE_URL="s3://cohort",
                            SEQLIFE_S3_ENDPOINT_URL=endpoint)
    residency.check(data_locations(settings), POLICY)


@pytest.mark.parametrize("region, allowed", [("us-east-1", False), ("eu-central-1", False),
                                             (POLICY["allowed_regions"][0], True)])
def test_without_an_endpoint_the_region_boto3_would_use_is_checked(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, region: str, allowed: bool) -> None:
    """§7 q: with SEQLIFE_S3_ENDPOINT_URL / SEQLIFE_KMS_ENDPOINT_URL unset, boto3 derives the
    endpoint from AWS_DEFAULT_REGION; a region outside the policy is refused for store and KMS."""
    monkeypatch.setenv("AWS_DEFAULT_REGION", region)
    settings = replace(settings_for(tmp_path, SEQLIFE_STORE_URL="s3://cohort"),
                       kms_key_id="alias/seqlife")
    if allowed:
        residency.check(data_locations(settings), POLICY)
        return
    with pytest.raises(ResidencyViolation) as refused:
        build_resources(settings)
    assert refused.value.attrs["locations"] == ["object store", "KMS"]
    assert "AWS_DEFAULT_REGION (SEQLIFE_S3_ENDPOINT_URL unset)" in refused.value.message


def test_a_foreign_kms_endpoint_is_refused(tmp_path: Path) -> None:
    """§7 q with §10.1 g: the keys wrapping the data keys stay in the country too."""
    settings = replace(settings_for(tmp_path), kms_key_id="alias/seqlife",
                       kms_endpoint_url="https://kms.ap-southeast-1.amazonaws.com")
    with pytest.raises(ResidencyViolation, match=r"KMS \(SEQLIFE_KMS_ENDPOINT_URL\): host kms"):
        build_resources(settings)
