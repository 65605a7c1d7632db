"""A hospital's own export through the whole lifecycle: pinyin and Chinese column names, GBK with
CRLF, the hospital's sex codes and date format. Intake classifies the columns by content and
proposes a map; nothing is registered until a steward approves it; then classify, de-identify
(by roles) and certify run on it (GB/T 39725 §11.3.4.4 a, §10.2, §11.4.2.4; DER §5)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import yaml
from conftest import as_role
from sqlalchemy import func, select

from infra.catalog import DataFile, DatasetVersion
from seqlife.exceptions import ColumnMapNeeded, SchemaMismatch

pytestmark = pytest.mark.usefixtures("prefect_backend")

NAMES = {"mrn": "住院号", "name": "xm", "id_number": "sfzh", "sex": "xb", "birth_date": "出生日期",
         "mobile": "lxdh", "email": "yx", "province": "sheng", "city": "shi", "county": "xian",
         "street": "现住址", "postcode": "yzbm", "employer": "gzdw", "insurance_no": "ybh",
         "attending_doctor": "zzys", "admission_date": "ryrq", "discharge_date": "cyrq",
         "sequencing_date": "cxrq", "diagnosis_icd10": "zd", "lab_hemoglobin_g_l": "hb",
         "lab_wbc_10e9_l": "wbc", "lab_alt_u_l": "alt", "note": "bcjl"}


def hospital_export(cohort: Path) -> set[str]:
    """Rewrite the delivery's clinical table as a hospital system exports it; return the direct
    identifiers it holds."""
    with (cohort / "clinical.csv").open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    (cohort / "clinical.parquet").unlink(missing_ok=True)
    order = list(reversed(list(NAMES)))
    lines = [",".join(NAMES[c] for c in order)]
    for row in rows:
        row["sex"] = {"M": "男", "F": "女"}[row["sex"]]
        row["birth_date"] = row["birth_date"].replace("-", "/")
        lines.append(",".join(f'"{row[c]}"' if "," in row[c] else row[c] for c in order))
    (cohort / "clinical.csv").write_bytes(("\r\n".join(lines) + "\r\n").encode("gbk"))
    return {row[c] for row in rows for c in ("mrn", "name", "id_number", "mobile", "email")}


@pytest.mark.parametrize("backend", ["embedded"], indirect=True)
def test_a_hospital_export_goes_through_the_lifecycle_after_the_steward_approves_its_map(
        resources, cohort: Path, home: Path) -> None:
    from flows.certify import certify_flow
    from flows.classify import classify_flow
    from flows.collect import collect_flow
    from flows.deidentify import deidentify_flow
    from seqlife.classify.labels import load_classify_policy
    from seqlife.deidentify.tables import load_deidentify_policy
    from seqlife.quality import load_quality_policy
    from tasks.classify import approve as approve_labels
    from tasks.deidentify import approve as approve_release
    from tasks.certify import verify_document
    from tasks.encrypt import read_parquet

    identifiers = hospital_export(cohort)
    with pytest.raises(ColumnMapNeeded) as caught:
        collect_flow(str(cohort), "hospital")
    proposal = Path(caught.value.proposal)
    proposed = yaml.safe_load(proposal.read_text(encoding="utf-8"))["columns"]
    assert {proposed[NAMES[c]] for c in ("mrn", "sex", "birth_date", "admission_date",
                                         "diagnosis_icd10")} == {
        "mrn", "sex", "birth_date", "admission_date", "diagnosis_icd10"}
    assert not any(i in caught.value.message for i in identifiers)
    assert [e.action for e in resources.audit.entries()][-1] == "collect.refused"
    with resources.sessions() as session:
        assert session.scalar(select(func.count(DatasetVersion.id))) == 0

    result = collect_flow(str(cohort), "hospital", column_map=str(proposal))
    assert result["created"]
    stored = resources.store.get_bytes("01_raw/hospital/_maps/v1.yaml")
    assert yaml.safe_load(stored)["columns"] == proposed
    assert ("collect.map", "ok") in [(e.action, e.outcome) for e in resources.audit.entries()]

    classify_flow("hospital")
    approve_labels(resources, "hospital", None, [], load_classify_policy())
    release = deidentify_flow("hospital", "p-hosp")
    kanon = release["report"]["kanon"]
    for qi in ("age", "sex", "diagnosis_icd10", "discharge_date" +
               load_deidentify_policy()["intervals"]["suffix"]):
        assert qi in kanon["quasi_identifiers"]
    approve_release(as_role(resources, "committee"), "hospital", "p-hosp", None,
                    load_deidentify_policy())
    issued = certify_flow(release["dataset"])
    assert verify_document(resources, issued["signed"]) == []
    with resources.sessions() as session:
        version = session.scalar(select(DatasetVersion).where(
            DatasetVersion.zone == "03_deidentified"))
        clinical = session.scalar(select(DataFile).where(
            DataFile.dataset_version_id == version.id, DataFile.role == "clinical"))
        table = read_parquet(resources, clinical)
    attribute = load_quality_policy()["deidentified_quasi_identifiers"]["attribute"]
    assert table.attrs[attribute] == kanon["quasi_identifiers"]
    cells = {str(v) for column in table.columns for v in table[column].dropna()}
    assert not identifiers & cells


@pytest.mark.parametrize("backend", ["embedded"], indirect=True)
def test_a_map_that_leaves_a_required_role_unfilled_is_refused(resources, cohort: Path) -> None:
    from flows.collect import collect_flow

    hospital_export(cohort)
    with pytest.raises(ColumnMapNeeded) as caught:
        collect_flow(str(cohort), "hospital-2")
    document = yaml.safe_load(Path(caught.value.proposal).read_text(encoding="utf-8"))
    document["columns"][NAMES["mrn"]] = "drop"
    edited = Path(caught.value.proposal).with_name("edited.yaml")
    edited.write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")
    with pytest.raises(SchemaMismatch, match=r"required column\(s\) \['mrn'\]"):
        collect_flow(str(cohort), "hospital-2", column_map=str(edited))
