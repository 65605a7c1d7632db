"""Content detectors of the classify stage, each test citing the clause that makes the content an
identifier (GB/T 39725 §10.2 a–d, Table 6, App. G; RARE §3.2.4; §6.1 Table 1)."""

from __future__ import annotations

import random
import shutil
from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seqlife.classify.detectors import (
    DETECTOR_NAMES,
    SPECIFICITY,
    Finding,
    best_finding,
    detect_column,
    load_detectors,
    sample_values,
)
from seqlife.exceptions import PolicyFileError
from seqlife.ids import resident_id_check_digit
from seqlife.policy import POLICY_DIR
from seqlife.synth import generate_cohort

DETECTORS = load_detectors()
FAST = settings(max_examples=40, deadline=None, database=None)

#: Column of the synthetic clinical table -> the detector that must explain it best.
EXPECTED = {
    "mrn": "medical_record_no",  # §10.2 a record numbers
    "name": "person_name",  # §10.2 a names of subjects
    "attending_doctor": "person_name",  # §10.2 a names of doctors
    "id_number": "resident_id",  # §10.2 a ID-card numbers
    "mobile": "mobile",  # §10.2 a phone
    "email": "email",  # §10.2 a e-mail
    "street": "address",  # §10.2 c 1, App. G street and house number
    "postcode": "postcode",  # §10.2 c 1, Table 6
    "insurance_no": "insurance_no",  # §10.2 a insurance numbers
    "birth_date": "date",  # §10.2 b
    "admission_date": "date",
    "discharge_date": "date",
    "sequencing_date": "date",
    "diagnosis_icd10": "icd10",  # §6.1 Table 1 health status
    "sex": "sex",  # §10.2 b
    "note": "free_text",  # §10.2 a, d: notes embed identifiers
    "lab_hemoglobin_g_l": "numeric_measure",
    "lab_wbc_10e9_l": "numeric_measure",
    "lab_alt_u_l": "numeric_measure",
}


@pytest.fixture(scope="module")
def clinical(tmp_path_factory: pytest.TempPathFactory) -> pa.Table:
    """The 60-subject synthetic clinical table (seed 7), as Parquet gives it back."""
    out = tmp_path_factory.mktemp("cohort")
    generate_cohort(out, subjects=60, seed=7, reads_per_subject=0, variants_per_subject=0)
    return pq.read_table(out / "clinical.parquet")


@pytest.fixture(scope="module")
def renamed(clinical: pa.Table) -> tuple[pa.Table, dict[str, str]]:
    """The same table with every column renamed to a random, meaningless name."""
    rng = random.Random(20240607)
    names = {name: f"col_{rng.getrandbits(64):016x}" for name in clinical.column_names}
    return clinical.rename_columns([names[n] for n in clinical.column_names]), names


def best(name: str, column) -> str | None:
    found = best_finding(detect_column(name, column, DETECTORS))
    return found.detector if found else None


# --- the synthetic clinical table --------------------------------------------------------------


@pytest.mark.parametrize("column, detector", sorted(EXPECTED.items()))
def test_identifying_columns_of_the_clinical_table_get_their_detector(
    clinical: pa.Table, column: str, detector: str
) -> None:
    """GB/T 39725 §10.2 a–b; RARE §3.2.4: each listed identifier is recognised in realistic data."""
    assert best(column, clinical.column(column)) == detector


@pytest.mark.parametrize("column, detector", sorted(EXPECTED.items()))
def test_when_columns_are_renamed_to_random_strings_then_content_still_decides(
    clinical: pa.Table, renamed: tuple[pa.Table, dict[str, str]], column: str, detector: str
) -> None:
    """RARE §3.2.4: identifiers are recognised by content, not by a column name that can lie."""
    table, names = renamed
    hidden = best_finding(detect_column(names[column], table.column(names[column]), DETECTORS))
    named = best_finding(detect_column(column, clinical.column(column), DETECTORS))
    assert hidden is not None and hidden.detector == detector
    assert not hidden.name_hint and named.name_hint
    assert hidden.confidence <= named.confidence  # the name only ever adds confidence


@pytest.mark.parametrize("column", ["province", "city", "county"])
def test_province_city_and_county_are_not_flagged_as_address_or_name(
    clinical: pa.Table, column: str
) -> None:
    """GB/T 39725 §10.2 c 1, App. G: province, city and county may be kept; only street level is
    a direct identifier (and 成都市 or 武侯区 start with a surname but are not names)."""
    found = {f.detector for f in detect_column(column, clinical.column(column), DETECTORS)}
    assert not found & {"address", "person_name"}


@pytest.mark.parametrize("column", ["province", "city", "county"])
def test_province_city_and_county_are_regions_even_under_random_names(
    clinical: pa.Table, column: str
) -> None:
    """GB/T 39725 §10.2 c 1: administrative areas are quasi-identifiers, generalised by population."""
    best = best_finding(detect_column("col_x91", clinical.column(column), DETECTORS))
    assert best is not None and best.detector == "region"


def test_no_finding_repr_contains_a_sampled_value(clinical: pa.Table) -> None:
    """GB/T 39725 §10.2 a: findings carry counts only; identifiers never leave the column."""
    for name in clinical.column_names:
        values = {str(v) for v in sample_values(clinical.column(name)) if len(str(v)) >= 4}
        for finding in detect_column(name, clinical.column(name), DETECTORS):
            text = repr(finding) + str(finding)
            assert not any(value in text for value in values), name


def test_csv_typed_columns_integers_are_read_as_digits(clinical: pa.Table) -> None:
    """GB/T 39725 §10.2 a: an all-digit column read from CSV as int64 is still a phone number."""
    mobiles = pa.chunked_array([[int(v) for v in clinical.column("mobile").to_pylist()]])
    postcodes = pa.chunked_array([[int(v) for v in clinical.column("postcode").to_pylist()]])
    assert best("c1", mobiles) == "mobile"
    assert best("c2", postcodes) == "postcode"
    counts = pa.chunked_array([[12, 40, 7, 160, 33, 52]])
    assert best("c3", counts) is None  # whole numbers: an age, a year, a bed number? a steward says
    assert best("lab_count", counts) == "numeric_measure"


@pytest.mark.parametrize("values", [[1, 2, 2, 1, 1], [1.0, 2.0, 1.0], ["0", "1", "9", "1"]])
def test_whole_numbers_with_few_distinct_values_are_codes_left_for_a_steward(values) -> None:
    """GB/T 39725 §10.2 b: sex coded 1/2 under an unknown name is a category code, not a
    harmless measure; it stays unrecognised so the de-identifier stops until it is labelled."""
    assert best("c9", pa.chunked_array([values])) is None
    assert best("xb", pa.chunked_array([[1, 2, 2, 1, 1]])) == "sex"  # the name says what 1/2 are


def test_whole_number_floats_are_tested_as_digits_and_decimals_are_measures() -> None:
    """GB/T 39725 §10.2 a: a phone or postcode column stored as floats (blanks in a pandas or
    Excel export) is still a phone or a postcode; numbers with decimals are measurements."""
    assert best("c1", pa.array([100080.0, 310013.0, 610041.0, 200000.0, 518000.0])) == "postcode"
    phones = [13812345678.0, 15900001111.0, 13700000000.0, 18900000001.0, 13600000002.0]
    assert best("c2", pa.array(phones, pa.float64())) == "mobile"
    assert best("c3", pa.chunked_array([[str(p) for p in phones]])) == "mobile"  # '1382….0' text
    assert best("c4", pa.array([135.5, 121.0, 140.2])) == "numeric_measure"


def test_arrow_date_and_timestamp_columns_are_dates_with_full_share() -> None:
    """GB/T 39725 §10.2 b, c 3: dates are quasi-identifiers whatever the column is called."""
    for column in (pa.array([date(2020, 1, 2), None], pa.date32()),
                   pa.array([1_600_000_000_000, 1_600_100_000_000], pa.timestamp("ms"))):
        found = best_finding(detect_column("x", column, DETECTORS))
        assert found is not None and (found.detector, found.share) == ("date", 1.0)


# --- single detectors --------------------------------------------------------------------------


def resident_ids() -> st.SearchStrategy[str]:
    """Valid GB 11643 numbers: county code, calendar birth date, sequence, MOD 11-2 check."""
    return st.builds(
        lambda county, birth, seq: (body := f"{county}{birth:%Y%m%d}{seq:03d}")
        + resident_id_check_digit(body),
        st.integers(110000, 659999), st.dates(date(1900, 1, 1), date(2099, 12, 31)),
        st.integers(0, 999),
    )


@FAST
@given(st.lists(resident_ids(), min_size=1, max_size=40))
def test_valid_resident_ids_are_detected(ids: list[str]) -> None:
    """GB/T 39725 §10.2 a; RARE §3.2.4: ID-card numbers identify a person directly."""
    assert best("c", ids) == "resident_id"


@FAST
@given(st.lists(st.tuples(resident_ids(), st.integers(1, 10)), min_size=1, max_size=40))
def test_resident_ids_with_a_wrong_check_digit_are_not_resident_ids(pairs) -> None:
    """GB/T 39725 §10.2 a: only a verified check character counts; 18 digits alone do not."""
    checks = "0123456789X"
    wrong = [i[:17] + checks[(checks.index(i[17]) + shift) % 11] for i, shift in pairs]
    assert "resident_id" not in {f.detector for f in detect_column("c", wrong, DETECTORS)}


mobiles = st.builds(lambda second, rest: f"1{second}{rest:09d}", st.integers(3, 9),
                    st.integers(0, 10**9 - 1))


@FAST
@given(st.lists(mobiles, min_size=1, max_size=40), st.sampled_from(["", "+86", "86", "+86 "]))
def test_valid_mobile_numbers_are_detected(numbers: list[str], prefix: str) -> None:
    """GB/T 39725 §10.2 a: mainland mobile numbers, with or without the country code."""
    assert best("c", [prefix + n for n in numbers]) == "mobile"


@FAST
@given(st.lists(mobiles, min_size=1, max_size=40), st.sampled_from(["short", "long", "12"]))
def test_mobile_near_misses_are_not_mobiles(numbers: list[str], miss: str) -> None:
    """GB/T 39725 §10.2 a: 10 or 12 digits, or a 12 prefix, are not mainland mobiles."""
    changed = {"short": [n[:10] for n in numbers], "long": [n + "0" for n in numbers],
               "12": ["12" + n[2:] for n in numbers]}[miss]
    assert "mobile" not in {f.detector for f in detect_column("c", changed, DETECTORS)}


@FAST
@given(st.lists(st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=1,
                        max_size=12), min_size=1, max_size=40))
def test_random_ascii_words_are_not_person_names(words: list[str]) -> None:
    """GB/T 39725 §10.2 a: the name detector looks for Chinese names, not any short word."""
    assert "person_name" not in {f.detector for f in detect_column("name", words, DETECTORS)}


@pytest.mark.parametrize("values", [["欧阳娜", "司马强", "诸葛亮"], ["王伟", "李秀英", "张子怡"]])
def test_chinese_names_with_single_and_double_surnames_are_names(values: list[str]) -> None:
    """GB/T 39725 §10.2 a: names of subjects, doctors and relatives."""
    assert best("c", values) == "person_name"


@pytest.mark.parametrize("values, expected", [
    (["010-12345678", "0571-8765432", "(020)87654321"], "landline"),
    (["wang@163.com", "12345@qq.com"], "email"),
    (["2019-01-02", "2020/12/31", "20210228", "2022年3月4日", "2019-01-02T08:30:00"], "date"),
    (["I10", "E11.9", "B20", "U07.1", "I10.x00x002"], "icd10"),
    (["男", "女", "女"], "sex"),
    (["ZY123456", "BA0000123456"], "medical_record_no"),
    (["浙江省杭州市西湖区北山街道", "北京市海淀区中关村大街27号"], "address"),
])
def test_each_detector_recognises_its_documented_forms(values: list[str], expected: str) -> None:
    """GB/T 39725 §10.2 a–b, Table 6: the forms each detector's YAML note promises."""
    assert best("c", values) == expected


@pytest.mark.parametrize("values, absent", [
    (["2019-02-30", "20190230", "2021-13-01"], "date"),  # not calendar days
    (["D95", "E95", "U99", "K99.1"], "icd10"),  # outside every ICD-10 chapter block
    (["M", "F", "X", "Y", "Z"], "sex"),  # more than 4 distinct codes
    (["入院后完善相关检查，病情平稳。"] * 30, "free_text"),  # one repeated sentence is a label
    (["100080", "abc", "xyz", "uvw"], "postcode"),  # 25 % is below min_share
])
def test_near_misses_are_refused(values: list[str], absent: str) -> None:
    """GB/T 39725 §10.2 b, §6.1 Table 1: validators and column gates keep false alarms out."""
    assert absent not in {f.detector for f in detect_column("c", values, DETECTORS)}


def test_name_hint_lowers_the_share_needed_and_raises_confidence() -> None:
    """RARE §3.2.4: a column called 'phone' with half its values mobiles is still a phone column."""
    values = ["13812345678", "unknown", "15900001111", "none"] * 5
    assert best("col_1", values) is None
    found = best_finding(detect_column("contact_phone", values, DETECTORS))
    assert found is not None and found.detector == "mobile" and found.name_hint
    assert found.share == 0.5 and found.confidence == pytest.approx(0.95 * 0.5 + 0.2)


def test_postcode_is_low_confidence_unless_every_value_is_six_digits() -> None:
    """GB/T 39725 §10.2 c 1: six digits alone are weak evidence of a postcode."""
    partial = detect_column("c", ["100080"] * 9 + ["n/a"], DETECTORS)
    full = detect_column("c", ["100080"] * 10, DETECTORS)
    assert partial[0].detector == full[0].detector == "postcode"
    assert partial[0].confidence < full[0].confidence


def test_findings_are_ordered_by_confidence_then_specificity() -> None:
    ties = [Finding("free_text", 1, 1, 1.0, 0.5, False), Finding("mobile", 1, 1, 1.0, 0.5, False)]
    assert best_finding(ties).detector == "mobile"
    assert best_finding([]) is None
    assert DETECTOR_NAMES == set(SPECIFICITY) and len(SPECIFICITY) == 20


@pytest.mark.parametrize("column", [[], [None, None], pa.array([None, None]), ["  ", ""],
                                    pa.array([True, False])])
def test_empty_null_blank_or_boolean_columns_have_no_finding(column) -> None:
    assert detect_column("c", column, DETECTORS) == []


# --- sampling ----------------------------------------------------------------------------------


@FAST
@given(st.lists(st.one_of(st.none(), st.integers(0, 50)), max_size=300), st.integers(0, 120),
       st.integers(0, 3), st.integers(1, 7))
def test_sample_values_is_deterministic_and_never_returns_nulls(values, size, seed, chunks) -> None:
    """The same seed gives the same sample for a list and for any chunking of the Arrow column."""
    cut = sorted(random.Random(seed).sample(range(len(values) + 1), min(chunks, len(values) + 1)))
    pieces = [values[a:b] for a, b in zip([0] + cut, cut + [len(values)])]
    arrow = pa.chunked_array(pieces, type=pa.int64())
    first = sample_values(values, size, seed)
    assert first == sample_values(values, size, seed) == sample_values(arrow, size, seed)
    present = [v for v in values if v is not None]
    assert None not in first and len(first) == min(size, len(present))


def test_sample_values_spans_validity_windows_of_long_columns_with_nulls() -> None:
    """A long column with nulls is sampled through validity windows and gives the same answer."""
    values = [None if i % 3 == 0 else i for i in range(200_000)]
    arrow = pa.chunked_array([values[:70_000], values[70_000:]], type=pa.int64())
    sample = sample_values(arrow, 2000, seed=5)
    assert sample == sample_values(values, 2000, seed=5)
    assert len(set(sample)) == 2000 and min(sample) < 20_000 and max(sample) > 180_000


# --- the policy file ---------------------------------------------------------------------------


def test_detector_policy_loads_with_clauses_and_a_content_hash() -> None:
    """Policies are data with a content hash (CONVENTIONS 5); every detector cites its clause."""
    assert [d.name for d in DETECTORS.detectors] == list(SPECIFICITY)
    assert all("§" in d.clause for d in DETECTORS.detectors)
    assert len(DETECTORS.policy_hash) == 64
    assert load_detectors().policy_hash == DETECTORS.policy_hash


@pytest.mark.parametrize("old, new, message", [
    ("      validator: resident_id_check_digit", "      validator: luhn", "unknown validator"),
    ("      max_distinct: 4", "      max_distinct: 4\n      colour: red", "unknown field"),
    ("      pattern: '[0-8][0-9]{5}'", "      pattern: '[0-8][0-9'", "does not compile"),
    ("      kind: vocabulary", "      kind: lexicon", "unknown kind"),
])
def test_a_broken_detector_file_is_refused_at_load_time_naming_the_detector(
    tmp_path: Path, old: str, new: str, message: str
) -> None:
    """Mismatches raise at load time with the file and detector named (CONVENTIONS 5)."""
    text = (POLICY_DIR / "classify_detectors.yaml").read_text(encoding="utf-8")
    assert old in text
    (tmp_path / "classify_detectors.yaml").write_text(text.replace(old, new, 1), encoding="utf-8")
    with pytest.raises(PolicyFileError, match=message) as caught:
        load_detectors(tmp_path)
    assert "classify_detectors.yaml" in str(caught.value) and "detector '" in str(caught.value)


def test_missing_detector_file_is_refused(tmp_path: Path) -> None:
    shutil.rmtree(tmp_path)
    with pytest.raises(PolicyFileError, match="does not exist"):
        load_detectors(tmp_path)
