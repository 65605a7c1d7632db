"""Residency (GB/T 39725 §7 q): store, catalog, KMS and backups only where the policy allows --
loopback and local paths for the embedded default, in-country cloud regions, listed hosts; any
other host, an unknown one included, is refused. Allowed values come from the policy the code
loads, never from literals here."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from seqlife import residency
from seqlife.exceptions import ConfigurationError, PolicyFileError, ResidencyViolation
from seqlife.policy import POLICY_DIR
from seqlife.residency import Location

POLICY = residency.load_residency_policy()
CLAUSE = "GB/T 39725 §7 q"


def store_at(url: str) -> Location:
    return Location("object store", "SEQLIFE_S3_ENDPOINT_URL", url)


@pytest.mark.parametrize("pattern", POLICY["region_endpoints"])
@pytest.mark.parametrize("region", POLICY["allowed_regions"])
def test_when_an_endpoint_names_an_allowed_region_then_it_passes(pattern: str,
                                                                  region: str) -> None:
    """§7 q: cloud endpoints in the policy's regions are in the country."""
    residency.check([store_at(f"https://{pattern.format(region=region)}")], POLICY)


@pytest.mark.parametrize("host, region", [("oss-cn-hangzhou.aliyuncs.com", "cn-hangzhou"),
                                          ("s3.cn-north-1.amazonaws.com.cn", "cn-north-1")])
def test_named_in_country_endpoints_are_read_through_the_policy(host: str, region: str) -> None:
    """§7 q: the region is read from the host with the policy's own patterns and is listed."""
    assert residency.endpoint_regions(host, POLICY) == [region]
    assert region in POLICY["allowed_regions"]
    assert residency.refusal(store_at(f"https://{host}"), POLICY) is None


@pytest.mark.parametrize("url, says", [
    ("https://s3.us-east-1.amazonaws.com", "host s3.us-east-1.amazonaws.com is not a known"),
    ("https://s3.amazonaws.com", "host s3.amazonaws.com is not a known in-country host"),
    ("https://oss-us-west-1.aliyuncs.com", "region us-west-1, which is not one of the allowed"),
    ("https://oss-cn-hongkong.aliyuncs.com", "region cn-hongkong, which is not one of the"),
    ("https://kms.eu-west-1.amazonaws.com.cn", "region eu-west-1"),
    ("https://minio.example.org:9000", "host minio.example.org is not a known in-country"),
    ("https://10.1.2.3", "host 10.1.2.3 is not a known in-country host"),
    ("https://s3.cn-north-1.amazonaws.com.cn.attacker.example", "is not a known in-country"),
])
def test_when_a_host_is_foreign_or_unknown_then_it_is_refused_with_the_clause(
        url: str, says: str) -> None:
    """§7 q: never stored on servers abroad; an unknown endpoint fails closed."""
    with pytest.raises(ResidencyViolation) as refused:
        residency.check([store_at(url)], POLICY)
    assert isinstance(refused.value, ConfigurationError)
    assert CLAUSE in refused.value.message and says in refused.value.message
    assert "object store (SEQLIFE_S3_ENDPOINT_URL)" in refused.value.message


@pytest.mark.parametrize("url", ["http://127.0.0.1:8333", "http://localhost:5000",
                                 "http://[::1]:9000", "postgresql+psycopg://u@127.0.0.1:5432/d",
                                 "sqlite:////var/lib/seqlife/catalog.db",
                                 "file:///var/lib/seqlife/store", "/mnt/backups/data"])
def test_loopback_and_local_paths_pass_for_the_embedded_default(url: str) -> None:
    """§7 q: services on this machine and its disks are where the deployment stands; the policy
    allows them (its loopback and local_paths rules are on)."""
    assert POLICY["loopback"] and POLICY["local_paths"]
    residency.check([store_at(url)], POLICY)


def test_every_refused_location_is_named_once_and_no_credential_is_quoted() -> None:
    """§7 q: one error lists all offenders by setting and host; a database password never
    reaches the message (errors carry no secret)."""
    locations = [Location("catalog", "SEQLIFE_DB_URL",
                          "postgresql+psycopg://seqlife:s3cret-pw@db.example.com:5432/seqlife"),
                 store_at("https://s3.us-west-2.amazonaws.com"),
                 Location("data backups", "SEQLIFE_BACKUP_DIR", "/srv/backups")]
    with pytest.raises(ResidencyViolation) as refused:
        residency.check(locations, POLICY)
    assert refused.value.attrs["locations"] == ["catalog", "object store"]
    assert "db.example.com" in refused.value.message
    assert "s3cret-pw" not in refused.value.message and "seqlife:" not in refused.value.message


def test_a_url_without_a_host_is_refused() -> None:
    """Fail closed: a database reached through an implicit host (PGHOST, a socket) cannot be
    placed, so it is refused until the host is written out."""
    with pytest.raises(ResidencyViolation, match="names no host"):
        residency.check([Location("catalog", "SEQLIFE_DB_URL", "postgresql+psycopg:///db")],
                        POLICY)


def write_policy(folder: Path, **changes: object) -> Path:
    document = yaml.safe_load((POLICY_DIR / "residency.yaml").read_text(encoding="utf-8"))
    for name, value in changes.items():
        document["rules"][name]["value"] = value
    folder.mkdir(exist_ok=True)
    (folder / "residency.yaml").write_text(yaml.safe_dump(document), encoding="utf-8")
    return folder


def test_a_listed_host_passes_and_loopback_can_be_switched_off(tmp_path: Path) -> None:
    """§7 q: the controller names its own in-country servers in the policy; the policy, not the
    code, decides whether this machine's services count."""
    policy = residency.load_residency_policy(write_policy(
        tmp_path, allowed_hosts=["s3.hospital.internal"], loopback=False, local_paths=False))
    residency.check([store_at("https://S3.Hospital.Internal:8443")], policy)
    with pytest.raises(ResidencyViolation, match="loopback host 127.0.0.1 is not allowed"):
        residency.check([store_at("http://127.0.0.1:8333")], policy)
    with pytest.raises(ResidencyViolation, match="local paths are not allowed"):
        residency.check([Location("key backups", "SEQLIFE_KEY_BACKUP_DIR", "/srv/k")], policy)


@pytest.mark.parametrize("changes, says", [
    ({"region_endpoints": ["s3.amazonaws.com"]}, "must contain {region} exactly once"),
    ({"allowed_regions": "cn-north-1"}, "'allowed_regions' must be a list of names"),
    ({"loopback": "yes"}, "'loopback' must be true or false"),
])
def test_a_malformed_policy_is_refused_at_load_time(tmp_path: Path, changes: dict,
                                                    says: str) -> None:
    """A typo in the policy cannot open the check: it fails at load with the file named."""
    with pytest.raises(PolicyFileError, match=says) as refused:
        residency.load_residency_policy(write_policy(tmp_path, **changes))
    assert "residency.yaml" in refused.value.message
