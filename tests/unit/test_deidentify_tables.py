"""Table rules of de-identification, each citing its clause (GB/T 39725 §10.2, Table 6)."""

from __future__ import annotations

from datetime import date, timedelta

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seqlife.classify.detectors import date_parser
from seqlife.classify.labels import load_classify_policy
from seqlife.collect import subject_surrogate
from seqlife.deidentify import tables
from seqlife.deidentify.errors import DeidentificationError

POLICY = tables.load_deidentify_policy()
POP = tables.load_populations()


def test_table_6_date_shift_example() -> None:
    """GB/T 39725 Table 6: admission 2018-01-01 + 100 d = 2018-04-11; discharge 2018-04-01 + 100 d
    = 2018-07-10; the 90-day stay is unchanged."""
    admit, discharge = date(2018, 1, 1), date(2018, 4, 1)
    assert tables.shift_date(admit, 100) == date(2018, 4, 11)
    assert tables.shift_date(discharge, 100) == date(2018, 7, 10)
    assert (tables.shift_date(discharge, 100) - tables.shift_date(admit, 100)).days == 90


@given(st.binary(min_size=32, max_size=32), st.text(min_size=1, max_size=12),
       st.dates(date(1950, 1, 1), date(2030, 1, 1)), st.integers(0, 3000))
@settings(max_examples=200, deadline=None)
def test_date_shift_keeps_every_interval_of_a_patient(secret, key, first, gap) -> None:
    """GB/T 39725 §10.2 c 3: one secret offset per patient keeps every interval."""
    offset = tables.date_offset(secret, key, 365)
    assert offset != 0 and -365 <= offset <= 365
    second = first + timedelta(days=gap)
    assert (tables.shift_date(second, offset) - tables.shift_date(first, offset)).days == gap
    assert tables.date_offset(secret, key, 365) == offset  # stable for the secret


@given(st.lists(st.text(min_size=1, max_size=10), min_size=2, max_size=200, unique=True))
@settings(max_examples=100, deadline=None)
def test_surrogates_are_stable_and_collision_free(keys) -> None:
    """GB/T 39725 §10.2 f; Table 6: a unique keyed surrogate per linkage ID."""
    secret = b"s" * 32
    codes = [subject_surrogate(secret, k) for k in keys]
    assert len(set(codes)) == len(keys)
    assert codes == [subject_surrogate(secret, k) for k in keys]


@pytest.mark.parametrize("birth, reference, age", [
    (date(1980, 5, 2), date(2018, 5, 1), 37), (date(1980, 5, 2), date(2018, 5, 2), 38),
    (None, date(2018, 1, 1), None)])
def test_birth_date_becomes_age(birth, reference, age) -> None:
    """GB/T 39725 Table 6: birth date is deleted and converted to age."""
    assert tables.age_at(birth, reference) == age


def test_postcode_low_digits_zeroed_until_20000_people() -> None:
    """GB/T 39725 §10.2 c 1, Table 6: zero the low digits (100080 -> 100000) until the area
    covers >= 20,000 people, and no further."""
    codes = {code for code in POP.postcode_prefix if len(code) == 6}
    small = [c for c in codes if POP.postcode_prefix[c] < 20000]
    assert small, "the reference table must hold a postcode area below 20,000 people"
    for code in codes:
        out = tables.generalise_postcode(code, POP, 20000)
        kept = next(n for n in range(6, 0, -1) if POP.postcode_prefix.get(code[:n], 0) >= 20000)
        assert out == code[:kept] + "0" * (6 - kept)
    assert tables.generalise_postcode(small[0], POP, 20000) != small[0]
    assert tables.generalise_postcode("999999", POP, 20000) == "*"  # unknown area: never kept


def test_small_county_falls_back_to_its_city() -> None:
    """GB/T 39725 §10.2 c 1: a county below 20,000 people is replaced by its city."""
    small = [c for c, people in POP.county.items() if people < 20000]
    big = [c for c, people in POP.county.items() if people >= 20000]
    assert small and big
    assert tables.generalise_area(big[0], POP, 20000) == big[0]
    city = POP.county_city[small[0]]
    assert tables.generalise_area(small[0], POP, 20000) in (city, POP.city_province[city], "*")
    assert tables.generalise_area(small[0], POP, 20000) != small[0]


def test_small_employer_is_blanked() -> None:
    """GB/T 39725 §10.2 c 1: an employer is kept only if it covers 20,000 people."""
    big = max(POP.employer, key=POP.employer.get)
    small = min(POP.employer, key=POP.employer.get)
    assert tables.keep_employer(big, POP, 20000) == big
    assert tables.keep_employer(small, POP, 20000) is None


LABELS = load_classify_policy()["detector_labels"]


def role(detector: str) -> tables.ColumnRole:
    """A column's role as an approved classification gives it (identifier type from policy)."""
    return tables.ColumnRole(detector, LABELS[detector]["identifier"])


def _frame() -> tuple[pd.DataFrame, dict[str, tables.ColumnRole]]:
    county = next(c for c, p in POP.county.items() if p >= 20000)
    df = pd.DataFrame({
        "mrn": ["MR00000001", "MR00000002"], "name": ["张三", "李四"],
        "birth_date": [date(1980, 1, 1), date(1990, 6, 1)],
        "admission_date": [date(2018, 1, 1), date(2019, 3, 1)],
        "discharge_date": [date(2018, 4, 1), date(2019, 3, 5)],
        "county": [county, county], "postcode": ["100080", "100080"], "lab": [1.0, 2.0],
    })
    roles = {"mrn": role("medical_record_no"), "name": role("person_name"),
             "birth_date": role("birth_date"), "admission_date": role("date"),
             "discharge_date": role("date"), "county": role("region"),
             "postcode": role("postcode"), "lab": role("numeric_measure")}
    return df, roles


def _transform(df, roles):
    return tables.transform_table(df, roles, POLICY, surrogate_secret=b"a" * 32,
                                  shift_secret=b"b" * 32, populations=POP,
                                  parse_date=date_parser())


def test_transform_deletes_identifiers_links_by_surrogate_and_shifts_dates() -> None:
    """GB/T 39725 §10.2 a, d, f; Table 6."""
    df, roles = _frame()
    out, unshifted, done, index = _transform(df, roles)
    assert "name" not in out and "mrn" not in out and "birth_date" not in out
    assert list(out["age"]) == [38, 28]
    assert set(index.values()) == {"MR00000001", "MR00000002"}
    assert set(index) == set(out["subject"])
    stays = [(d - a).days for a, d in zip(out["admission_date"], out["discharge_date"])]
    assert stays == [90, 4]  # length of stay unchanged
    assert list(out["discharge_date_days"]) == [90, 4]  # and a quasi-identifier of its own
    assert done.quasi_identifiers["discharge_date_days"] == "interval"
    assert out["admission_date"].iloc[0] != date(2018, 1, 1)
    assert unshifted["admission_date"].iloc[0] == date(2018, 1, 1)  # the attacker's view
    assert "area" in out and "county" not in out and done.area_from == "county"
    assert "name" in done.deleted and "admission_date" in done.shifted
    assert done.anchor_date == "admission_date"


def test_transform_needs_exactly_one_linkage_column() -> None:
    df, roles = _frame()
    roles["mrn"] = role("person_name")
    with pytest.raises(DeidentificationError, match="exactly one column with the role"):
        _transform(df, roles)


def test_summaries_suppress_small_cells(tmp_path) -> None:
    """GB/T 39725 §11.4.2.4: counts below 5 are suppressed in outputs for public sharing."""
    import pysam

    from seqlife.deidentify.report import allele_frequency_summary, cohort_summary

    df = pd.DataFrame({"sex": ["F"] * 6 + ["M"] * 2})
    summary = cohort_summary(df, ["sex"], 5).set_index("sex")["count"]
    assert summary["F"] == 6 and pd.isna(summary["M"])
    header = pysam.VariantHeader()
    header.add_line("##contig=<ID=chr1,length=1000>")
    header.add_line('##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">')
    for name in ("a", "b", "c"):
        header.add_sample(name)
    path = tmp_path / "x.vcf.gz"
    with pysam.VariantFile(str(path), "wz", header=header) as out:
        for pos, gts in ((10, [(1, 1), (1, 1), (0, 1)]), (20, [(0, 1), (0, 0), (0, 0)])):
            record = out.new_record(contig="chr1", start=pos - 1, stop=pos, alleles=("A", "G"))
            for sample, gt in zip(("a", "b", "c"), gts):
                record.samples[sample]["GT"] = gt
            out.write(record)
    frequencies = allele_frequency_summary([path], 5).set_index("pos")
    assert frequencies.loc[10, "allele_count"] == 5 and frequencies.loc[10, "allele_number"] == 6
    assert pd.isna(frequencies.loc[20, "allele_count"]) and pd.isna(frequencies.loc[20, "allele_frequency"])
