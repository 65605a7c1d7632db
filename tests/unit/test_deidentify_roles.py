"""De-identification of hospital tables the project never saw: roles come from content, never from
column names; the stage fails closed; k holds over every quasi-identifier (diagnosis and the
intervals date shifting keeps included); the attacker model is met (GB/T 39725 §10.2, Table 6,
§11.4.2.4; RARE §4.5). Every rule's value is read from the policy the pipeline loads.
"""

from __future__ import annotations

import random
import string
import tempfile
from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path

import openpyxl
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from seqlife import synth
from seqlife.classify.detectors import date_parser
from seqlife.classify.labels import load_classify_policy
from seqlife.deidentify import tables
from seqlife.deidentify.errors import DeidentificationError, UndecidedColumns
from seqlife.deidentify.files import deidentify_local_file
from seqlife.deidentify.hierarchy import load_hierarchies
from seqlife.deidentify.kanon import class_sizes
from seqlife.exceptions import SeqlifeError
from seqlife.policy import Policy, Rule, load_policy
from seqlife.tableio import read_table_file

POLICY = tables.load_deidentify_policy()
POP = tables.load_populations()
K = int(POLICY["k"])
SECRETS = {"surrogate_secret": b"s" * 32, "shift_secret": b"d" * 32}

#: Column names of real export styles: pinyin initials, Chinese, English, and random tokens.
ALIASES: dict[str, tuple[str, str, str]] = {
    "mrn": ("zyh", "住院号", "InpatientNo"),
    "name": ("xm", "患者姓名", "PatientName"),
    "id_number": ("sfzh", "身份证号码", "IdCard"),
    "sex": ("xb", "性别", "Gender"),
    "birth_date": ("csrq", "出生日期", "DateOfBirth"),
    "mobile": ("lxdh", "联系电话", "Phone"),
    "email": ("yx", "电子邮箱", "Email"),
    "province": ("sheng", "省份", "Province"),
    "city": ("shi", "城市", "City"),
    "county": ("xian", "区县", "County"),
    "street": ("xzz", "现住址", "Address"),
    "postcode": ("yzbm", "邮政编码", "ZipCode"),
    "employer": ("gzdw", "工作单位", "Employer"),
    "insurance_no": ("ybh", "医保号", "InsuranceNo"),
    "attending_doctor": ("zzys", "主治医师", "Physician"),
    "admission_date": ("ryrq", "入院日期", "AdmitDate"),
    "discharge_date": ("cyrq", "出院日期", "DischargeDate"),
    "sequencing_date": ("cxrq", "测序日期", "SeqDate"),
    "diagnosis_icd10": ("zd", "主要诊断编码", "DiagnosisCode"),
    "lab_hemoglobin_g_l": ("hb", "血红蛋白", "Hemoglobin"),
    "lab_wbc_10e9_l": ("wbc", "白细胞", "WBC"),
    "lab_alt_u_l": ("alt", "谷丙转氨酶", "ALT"),
    "note": ("bz", "病程记录", "Remarks"),
}
DIRECT = ("mrn", "name", "id_number", "mobile", "email", "street", "insurance_no",
          "attending_doctor", "note")
DATE_STYLES = ("%Y-%m-%d", "%Y/%m/%d", "%Y%m%d", "%Y年%m月%d日")
FORMATS = ("utf-8", "utf-8-sig", "gbk", "gb18030", "xlsx")


def cohort(n: int, seed: int) -> pd.DataFrame:
    """Realistic values (synthetic people); the shapes around them are varied by the tests."""
    reference = synth._load_reference(Path(synth.__file__).parents[1] / "data_catalog" /
                                      "reference")
    return pd.DataFrame(synth._clinical_rows(random.Random(seed), reference, n))


def export(df: pd.DataFrame, names: dict[str, str], path: Path, fmt: str, date_style: str,
           sex_codes: tuple[str, str], order: list[str]) -> Path:
    """Write the table as a hospital system would: its own names, order, codes and encoding."""
    out = pd.DataFrame()
    for column in order:
        values = df[column]
        if column.endswith("_date"):
            values = values.map(lambda d: d.strftime(date_style) if isinstance(d, date) else None)
        elif column == "sex":
            values = values.map({"M": sex_codes[0], "F": sex_codes[1]})
        out[names[column]] = values.map(lambda v: None if v is None or v != v else str(v))
    if fmt == "xlsx":
        path = path.with_suffix(".xlsx")
        book = openpyxl.Workbook()
        sheet = book.active
        sheet.append(list(out.columns))
        for row in out.itertuples(index=False):
            sheet.append(list(row))
        book.save(path)
    else:
        path = path.with_suffix(".csv")
        path.write_bytes(out.to_csv(index=False, lineterminator="\r\n").encode(fmt))
    return path


def released(out: Path) -> pd.DataFrame:
    return read_table_file(out, out.name).to_pandas()


def assert_safe(raw: pd.DataFrame, names: dict[str, str], out: Path, report: dict) -> None:
    """No direct identifier, no birth date, k over every declared quasi-identifier, and the
    attacker of the policy re-links no more than its limit."""
    release = released(out)
    cells = {str(v) for column in release.columns for v in release[column].dropna()}
    for column in DIRECT:
        leaked = {str(v) for v in raw[column].dropna()} & cells
        assert not leaked, f"{column} survives as {names[column]}"
    text = "\n".join(cells)
    for column in ("id_number", "mobile", "mrn"):
        assert not any(str(v) in text for v in raw[column].dropna()), column
    assert names["birth_date"] not in release.columns
    qis = report["kanon"]["quasi_identifiers"]
    for expected in ("age", names["sex"], names["diagnosis_icd10"],
                     names["discharge_date"] + POLICY["intervals"]["suffix"]):
        assert expected in qis, f"{expected} is not a quasi-identifier"
    assert int(class_sizes(release, qis).min()) >= K
    limit = POLICY["risk_limits"]["linkage_reidentified"]
    assert report["attacker"]["reidentified_share"] <= limit
    assert report["attacker"]["knows"] == list(POLICY["attacker"]["knows"])
    ages = release["age"].dropna().astype(str)
    top = load_policy("deidentify_hierarchies", frozenset(load_hierarchies()))["age"]["edges"][-1]
    assert not any(a.isdigit() and int(a) >= top for a in ages), "an age over the top band"


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("style", [0, 1, 2], ids=["pinyin", "chinese", "english"])
def test_a_hospital_export_with_unseen_names_is_deidentified_safely(tmp_path, fmt, style) -> None:
    """GB/T 39725 §10.2 a–e, Table 6: every role is found by content, whatever the names."""
    raw = cohort(300, 11 + style)
    names = {c: ALIASES[c][style] for c in ALIASES}
    src = export(raw, names, tmp_path / "export", fmt, DATE_STYLES[style],
                 ("男", "女") if style == 1 else ("M", "F"), list(ALIASES))
    out = tmp_path / "release.csv"
    result = deidentify_local_file("table", src, out, project="p", **SECRETS)
    assert_safe(raw, names, out, result["report"])
    assert "age" in released(out)  # the birth date became an age (Table 6)
    assert out.read_bytes().decode("utf-8")  # output is always UTF-8


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 10**6), n=st.integers(40, 300), fmt=st.sampled_from(FORMATS),
       styles=st.lists(st.integers(0, 3), min_size=len(ALIASES), max_size=len(ALIASES)),
       date_style=st.sampled_from(DATE_STYLES), order_seed=st.integers(0, 10**6),
       sex_codes=st.sampled_from([("M", "F"), ("男", "女"), ("1", "2"), ("male", "female")]))
def test_any_naming_either_releases_safely_or_stops(tmp_path, seed, n, fmt, styles, date_style,
                                                     order_seed, sex_codes) -> None:
    """Random names (style 3 is a random token), order, encodings, date formats and sex codes:
    the stage either stops with a typed, steward-readable error and writes nothing, or releases
    a table with no identifier and k over every quasi-identifier. It never passes by accident."""
    rng = random.Random(order_seed)
    names = {c: (ALIASES[c][s] if s < 3 else "c" + "".join(rng.choices(string.ascii_lowercase, k=6)))
             for c, s in zip(ALIASES, styles)}
    order = list(ALIASES)
    rng.shuffle(order)
    raw = cohort(n, seed)
    work = Path(tempfile.mkdtemp(dir=tmp_path))
    src = export(raw, names, work / "export", fmt, date_style, sex_codes, order)
    out = work / "release.csv"
    try:
        result = deidentify_local_file("table", src, out, project="p", **SECRETS)
    except SeqlifeError as exc:
        assert not out.exists(), "a refused run left an output behind"
        for column in DIRECT:  # the refusal names columns, never a value
            assert not any(str(v) in exc.message for v in raw[column].dropna()[:50])
        return
    assert_safe(raw, names, out, result["report"])


# --- fail closed (GB/T 39725 §10.2; §6.2) -----------------------------------------------------


def _roles(**detectors: str) -> dict[str, tables.ColumnRole]:
    """Roles as an approved classification gives them (identifier types from classify.yaml)."""
    labels = load_classify_policy()["detector_labels"]
    return {c: tables.ColumnRole(d, labels[d]["identifier"]) for c, d in detectors.items()}


def _run(df: pd.DataFrame, roles: dict[str, tables.ColumnRole], policy: Policy = POLICY):
    return tables.deidentify_table(df, roles, policy, populations=POP, hierarchies=load_hierarchies(),
                                   parse_date=date_parser(), **SECRETS)


def _small_table(n: int = 60) -> pd.DataFrame:
    raw = cohort(n, 3)
    return raw[["mrn", "sex", "birth_date", "admission_date", "discharge_date",
                "diagnosis_icd10", "lab_alt_u_l"]]


ROLES = dict(mrn="medical_record_no", sex="sex", birth_date="birth_date", admission_date="date",
             discharge_date="date", diagnosis_icd10="icd10", lab_alt_u_l="numeric_measure")


def test_a_column_no_detector_recognised_stops_the_stage_naming_it() -> None:
    df = _small_table().assign(xq7=["α"] * 60)
    with pytest.raises(UndecidedColumns) as caught:
        _run(df, {**_roles(**ROLES), "xq7": tables.ColumnRole("", "unknown")})
    assert list(caught.value.decisions) == ["xq7"]
    assert "steward" in caught.value.message and "α" not in caught.value.message


def test_a_quasi_identifier_whose_role_has_no_rule_stops_the_stage() -> None:
    df = _small_table().assign(ward=["3A"] * 60)
    with pytest.raises(UndecidedColumns, match="'ward': labelled a quasi-identifier"):
        _run(df, {**_roles(**ROLES), "ward": tables.ColumnRole("ward_code", "quasi")})


def test_a_table_about_people_without_quasi_identifiers_stops() -> None:
    """k over an empty set proves nothing: the stage refuses instead of passing."""
    df = _small_table()[["mrn", "lab_alt_u_l"]]
    with pytest.raises(UndecidedColumns, match="no column is a quasi-identifier"):
        _run(df, _roles(mrn="medical_record_no", lab_alt_u_l="numeric_measure"))


def test_without_one_linkage_identifier_the_stage_stops() -> None:
    df = _small_table()
    roles = {**_roles(**ROLES), "mrn": tables.ColumnRole("identifier_code", "direct")}
    with pytest.raises(UndecidedColumns, match="exactly one column with the role"):
        _run(df, roles)


def test_a_date_column_with_values_that_are_not_dates_stops_without_naming_them() -> None:
    df = _small_table().astype({"discharge_date": object})
    df.loc[3, "discharge_date"] = "13812345678"
    with pytest.raises(DeidentificationError, match="1 value") as caught:
        _run(df, _roles(**ROLES))
    assert "13812345678" not in caught.value.message


def test_l_diversity_on_a_quasi_identifier_is_refused() -> None:
    policy = with_rule(POLICY, "l_diversity", {"role": "icd10", "l": 2})
    with pytest.raises(DeidentificationError, match="also a quasi-identifier"):
        _run(_small_table(), _roles(**ROLES), policy)


# --- tests that read the policy ---------------------------------------------------------------


def with_rule(policy: Policy, name: str, value: object) -> Policy:
    """The loaded policy with one rule's value changed (what a mutated policy file would load)."""
    rules = {**policy.rules, name: Rule(value, policy.clause(name))}
    return replace(policy, rules=rules, content_hash="mutated")


@pytest.mark.parametrize("k", [K, K + 3])
def test_k_of_the_policy_holds_over_every_quasi_identifier(k) -> None:
    """GB/T 39725 §10.2 e: the k the policy sets (and a larger one) holds on the release."""
    policy = with_rule(POLICY, "k", k)
    result = _run(cohort(400, 5)[list(ROLES)], _roles(**ROLES), policy)
    qis = tables.released_quasi_identifiers(result)
    assert {"age", "sex", "diagnosis_icd10", "discharge_date_days"} <= set(qis)
    assert result.kanon.k_achieved >= k
    assert int(class_sizes(result.table, qis).min()) >= k


@pytest.mark.parametrize("delta", [0, 1])
def test_an_area_is_kept_only_with_the_policy_population(delta) -> None:
    """GB/T 39725 §10.2 c 1: a county of exactly min_population people is kept; one person more
    in the rule and it is raised to its city."""
    minimum = int(POLICY["min_population"])
    county, people = min(((c, p) for c, p in POP.county.items() if p >= minimum),
                         key=lambda item: item[1])
    policy = with_rule(POLICY, "min_population", people + delta)
    kept = tables.generalise_area(county, POP, int(policy["min_population"]))
    assert (kept == county) == (delta == 0)


def test_the_top_age_band_of_the_policy_is_never_subdivided() -> None:
    """GB/T 39725 Table 6: ages from the last edge up are one band at every level, the exact
    level included; the edge is read from deidentify_hierarchies.yaml."""
    edges = load_policy("deidentify_hierarchies", frozenset(load_hierarchies()))["age"]["edges"]
    top = f">{edges[-1] - 1}"
    age = load_hierarchies()["age"]
    ages = pd.Series(pd.array([edges[-1] - 1, edges[-1], edges[-1] + 14], dtype="Int64"))
    for level in range(age.height):
        out = age.apply(ages, level).tolist()
        assert out[1] == out[2] == top
        assert out[0] != top


def test_one_patient_with_several_rows_keeps_every_interval() -> None:
    """GB/T 39725 §10.2 c 3, Table 6: one secret offset per patient, in every row: the days
    between a patient's two admissions survive, and so does each stay."""
    raw = cohort(120, 9)[list(ROLES)]
    again = raw.iloc[:40].copy()
    again["admission_date"] = again["admission_date"] + timedelta(days=200)
    again["discharge_date"] = again["discharge_date"] + timedelta(days=200)
    df = pd.concat([raw, again], ignore_index=True)
    out, unshifted, done, index = tables.transform_table(
        df, _roles(**ROLES), POLICY, populations=POP, parse_date=date_parser(), **SECRETS)
    for subject, rows in out.groupby("subject"):
        shifts = {(a - b).days for a, b in zip(rows["admission_date"],
                                               unshifted.loc[rows.index, "admission_date"])}
        assert len(shifts) == 1 and 0 < abs(shifts.pop()) <= POLICY["date_shift"]["max_days"]
    first, second = out.loc[0], out.loc[120]
    assert first["subject"] == second["subject"]
    assert (second["admission_date"] - first["admission_date"]).days == 200


def test_the_demo_shaped_release_resists_sex_diagnosis_and_length_of_stay() -> None:
    """GB/T 39725 §11.4.2.4: an attacker who knows a patient's sex, diagnosis and length of stay
    singles out no class smaller than k; the expected share re-linked stays within 1/k."""
    raw = cohort(400, 21)
    roles = {c: tables.ColumnRole(d, i) for c, (d, i) in {
        "mrn": ("medical_record_no", "direct"), "name": ("person_name", "direct"),
        "sex": ("sex", "quasi"), "birth_date": ("birth_date", "quasi"),
        "admission_date": ("date", "quasi"), "discharge_date": ("date", "quasi"),
        "diagnosis_icd10": ("icd10", "sensitive"), "county": ("region", "quasi"),
        "postcode": ("postcode", "quasi"), "lab_alt_u_l": ("numeric_measure", "none")}.items()}
    result = _run(raw[list(roles)], roles)
    release = result.table
    attack = ["sex", "diagnosis_icd10", "discharge_date_days"]
    assert int(class_sizes(release, attack).min()) >= K
    assert "discharge_date" in result.withheld or \
        result.kanon.levels["discharge_date_days"] == 0  # exact stay only when k holds on it
    assert result.risk.linkage_reidentified <= POLICY["risk_limits"]["linkage_reidentified"]
    assert result.risk.prosecutor_max <= POLICY["risk_limits"]["prosecutor_max"]


def test_a_diagnosis_held_by_fewer_than_k_people_never_appears() -> None:
    """GB/T 39725 §11.4.2.4's example: a diagnosis 4 patients have is generalised."""
    raw = cohort(300, 4)[list(ROLES)]
    raw.loc[:3, "diagnosis_icd10"] = "Q87.4"  # 4 patients with Marfan syndrome
    result = _run(raw, _roles(**ROLES))
    counts = result.table["diagnosis_icd10"].value_counts()
    assert "Q87.4" not in counts or counts["Q87.4"] >= K
    assert (counts[counts.index != "*"] >= int(POLICY["small_cells"])).all()


def test_hand_made_hospital_exports_are_read_and_never_pass_by_accident(tmp_path) -> None:
    """Fixtures no generator of ours produced (tests/data/hospital): each either releases with
    every rule met or stops with a typed error."""
    folder = Path(__file__).parents[1] / "data" / "hospital"
    files = sorted(p for p in folder.iterdir() if p.suffix in (".csv", ".txt", ".xlsx"))
    assert files
    for src in files:
        out = tmp_path / f"{src.stem}.csv"
        try:
            result = deidentify_local_file("table", src, out, project="p", **SECRETS)
        except SeqlifeError:
            assert not out.exists()
            continue
        release = released(out)
        qis = result["report"]["kanon"]["quasi_identifiers"]
        assert qis and int(class_sizes(release, qis).min()) >= K


def test_a_steward_role_override_decides_an_unrecognised_column() -> None:
    """GB/T 39725 §6.2: the steward labels what no detector recognised (sex coded 1/2 under an
    unknown name); the de-identifier then applies the role's rule instead of stopping."""
    from seqlife.classify.detectors import load_detectors
    from seqlife.classify.labels import Override, apply_overrides, label_table

    raw = _small_table(200).assign(c7=lambda d: d["sex"].map({"M": "1", "F": "2"}))
    raw = raw.drop(columns=["sex"]).astype(str)
    columns = {c: list(raw[c]) for c in raw.columns}
    policy = load_classify_policy()
    labels, _, _ = label_table("t.csv", columns, load_detectors(), policy, {})
    assert next(f for f in labels if f.field == "c7").identifier == "unknown"
    with pytest.raises(UndecidedColumns, match="'c7'"):
        _run(raw, tables.roles_from_labels(labels))
    decided = apply_overrides(labels, [Override("t.csv", "c7", 2, "quasi", "sex codes 1/2",
                                                "sex")], policy)
    result = _run(raw, tables.roles_from_labels(decided))
    assert "c7" in tables.released_quasi_identifiers(result)
    with pytest.raises(SeqlifeError, match="is not a role"):
        apply_overrides(labels, [Override("t.csv", "c7", 2, "quasi", "x", "gender")], policy)


@pytest.mark.parametrize("fixture, personal", [
    ("zy_export_gbk.csv", ["住院号", "姓名", "出生日期", "现住址", "联系电话"]),
    ("zy_export_utf8bom_tab.txt", ["zyh", "xm", "csrq", "xzz", "lxdh"]),
    ("lab_export.xlsx", ["PatientID", "Name", "DOB", "Phone"]),
])
def test_hand_made_exports_are_classified_by_content_never_as_harmless(fixture, personal) -> None:
    """Whatever their encoding and names, personal columns of exports no generator of ours made
    are identifiers or left for a steward — never labelled harmless (GB/T 39725 §10.2 a)."""
    from seqlife.classify.detectors import load_detectors
    from seqlife.classify.labels import classify_file

    folder = Path(__file__).parents[1] / "data" / "hospital"
    fields, _ = classify_file(folder / fixture, load_detectors(), load_classify_policy())
    by_name = {f.field: f for f in fields}
    for column in personal:
        assert by_name[column].identifier in ("direct", "quasi", "unknown"), column


# --- what an attacker tried (review of issue 15): each must stop or be safe ---------------------


def _base(n: int = 200) -> pd.DataFrame:
    return cohort(n, 31)[["mrn", "sex", "birth_date", "admission_date", "discharge_date",
                          "diagnosis_icd10", "county"]]


def _file_mode(tmp_path: Path, df: pd.DataFrame, header: bool = True):
    src = tmp_path / "in.csv"
    df.to_csv(src, index=False, header=header)
    out = tmp_path / "out.csv"
    return src, out


def test_a_table_exported_without_its_header_row_is_refused_without_echoing_it(tmp_path) -> None:
    """The first patient's values would become column names in labels, reports and the release."""
    raw = _base()
    src, out = _file_mode(tmp_path, raw, header=False)
    with pytest.raises(SeqlifeError, match="without its header row") as caught:
        deidentify_local_file("table", src, out, project="p", **SECRETS)
    first = raw.iloc[0]
    assert first["mrn"] not in caught.value.message and not out.exists()


def test_several_rows_of_one_patient_count_as_one_person(tmp_path) -> None:
    """GB/T 39725 §10.2 e: k counts people. 40 patients with five identical rows each would be
    40 classes of 5 rows — and of one person each."""
    raw = _base(40)
    many = pd.concat([raw] * 5, ignore_index=True).assign(hb=[float(i) + 0.5 for i in range(200)])
    result = _run(many, _roles(**{c: d for c, d in ROLES.items() if c in many}, hb="numeric_measure",
                              county="region"))
    qis = tables.released_quasi_identifiers(result)
    assert int(class_sizes(result.table, qis, "subject").min()) >= K
    assert result.risk.prosecutor_max <= POLICY["risk_limits"]["prosecutor_max"]


@pytest.mark.parametrize("column, values", [
    ("phone", lambda n: [f"{13800000000 + 7919 * i}.0" for i in range(n)]),
    ("old_id", lambda n: [f"1101017609{i % 28 + 1:02d}{i:03d}" for i in range(n)]),
    ("bed", lambda n: [str(1000 + i) for i in range(n)]),
    ("age", lambda n: [str(20 + i % 70) for i in range(n)]),
    ("byear", lambda n: [str(1940 + i % 60) for i in range(n)]),
    ("los", lambda n: [str(i % 40) for i in range(n)]),
    ("c8", lambda n: [str(25222 + i) for i in range(n)]),  # Excel serial dates
])
def test_numbers_that_identify_are_never_released_as_measures(tmp_path, column, values) -> None:
    """Phones written as floats, 15-digit IDs, bed numbers, ages, birth years, stays and Excel
    serial dates: deleted, generalised as quasi-identifiers, or the stage stops — never kept."""
    raw = _base().drop(columns=["birth_date"])
    raw[column] = values(len(raw))
    src, out = _file_mode(tmp_path, raw)
    try:
        result = deidentify_local_file("table", src, out, project="p", **SECRETS)
    except SeqlifeError:
        assert not out.exists()
        return
    release = released(out)
    kept = set(release.get(column, pd.Series(dtype=object)).dropna().astype(str))
    assert not kept & set(raw[column]), f"{column} released as it was delivered"
    qis = result["report"]["kanon"]["quasi_identifiers"]
    assert int(class_sizes(release, qis, "subject").min()) >= K


@pytest.mark.parametrize("name", ["subject", "age", "area", "discharge_date_days"])
def test_a_delivered_column_named_like_a_derived_one_stops_the_stage(name) -> None:
    raw = _base().assign(**{name: [str(1000 + i) for i in range(200)]})
    roles = _roles(**{c: d for c, d in {**ROLES, "county": "region"}.items() if c in raw})
    roles[name] = tables.ColumnRole("numeric_measure", "none")
    with pytest.raises(UndecidedColumns, match=f"'{name}': its name is the one the release gives"):
        _run(raw, roles)
