"""k-anonymity core of the deidentify stage: Table 6 hierarchies, the optimal lattice search and the
re-identification test (GB/T 39725 §10.2 c, e; Table 6; §11.4.2.4; RARE §4.5).

All tables here are synthetic and built in the test from a fixed seed.
"""

from __future__ import annotations

import ast
import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from seqlife.deidentify import hierarchy as hier
from seqlife.deidentify.errors import DeidentificationError, KAnonymityNotReached, ReidentificationRiskTooHigh
from seqlife.deidentify.hierarchy import (
    Hierarchy,
    age_bands,
    categorical_tree,
    date_levels,
    digits_zeroed,
    load_hierarchies,
    region_hierarchy,
    suppress_only,
)
from seqlife.deidentify.kanon import anonymise, k_of
from seqlife.deidentify.risk import RiskReport, assess, check
from seqlife.exceptions import PolicyFileError, SeqlifeError
from seqlife.policy import DATA_CATALOG

PREFIXES = ("1000", "1001", "3100", "8100")


def synthetic(n: int, seed: int, prefixes: tuple[str, ...] = PREFIXES) -> pd.DataFrame:
    """Age 0-99, sex, 6-digit postcodes under a few 4-digit prefixes, dates over 3 years."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "row": np.arange(n),
        "age": rng.integers(0, 100, n),
        "sex": rng.choice(["F", "M"], n),
        "postcode": [rng.choice(prefixes) + f"{x:02d}" for x in rng.integers(0, 100, n)],
        "date": pd.Timestamp("2016-01-01") + pd.to_timedelta(rng.integers(0, 1096, n), unit="D"),
        "diagnosis": rng.choice(["I10", "E11", "J45", "C50"], n, p=[0.55, 0.3, 0.1, 0.05]),
    })


def hierarchies() -> dict[str, Hierarchy]:
    return {"age": age_bands(), "sex": suppress_only("sex"), "postcode": digits_zeroed(6),
            "date": date_levels()}


QIS = ["age", "sex", "postcode", "date"]


# --- hierarchies (Table 6; §10.2 c) ------------------------------------------------------------


@pytest.mark.parametrize("age, level, band", [
    (38, 1, "35-39"),   # Table 6: 5-year bands
    (92, 1, ">89"),     # Table 6: >89 is one band
    (24, 1, "<25"),
    (25, 1, "25-29"),
    (89, 1, "85-89"),
    (90, 1, ">89"),
    (38, 2, "30-39"),   # §10.2 c 2: 38 -> 30-40
    (24, 2, "<30"),
    (38, 3, "30-49"),
    (38, 0, "38"),       # the exact age, as text beside ">89" in one column
    (38, 4, "*"),
])
def test_age_bands_follow_table6(age, level, band) -> None:
    """GB/T 39725 Table 6; §10.2 c 2."""
    assert age_bands().apply(pd.Series([age]), level).iloc[0] == band


def test_age_over_89_is_never_subdivided() -> None:
    """GB/T 39725 Table 6: every age above 89 shares one band at every level."""
    ages = pd.Series(range(90, 121))
    h = age_bands()
    for level in range(1, h.height + 1):
        assert set(h.apply(ages, level)) == ({">89"} if level < h.height else {"*"})


@pytest.mark.parametrize("code, level, expected", [
    ("100080", 2, "100000"),   # Table 6 example
    (100080, 2, "100000"),
    ("100080", 1, "100080"),
    ("100123", 2, "100100"),
    ("100123", 3, "100000"),
    ("100123", 5, "100000"),
    ("100123", 6, "*"),
    ("*", 1, "*"),
    ("12345", 1, "*"),
])
def test_postcode_low_digits_are_zeroed(code, level, expected) -> None:
    """GB/T 39725 §10.2 c 1; Table 6: 100080 -> 100000."""
    assert digits_zeroed(6).apply(pd.Series([code], dtype=object), level).iloc[0] == expected


@pytest.mark.parametrize("value", [pd.Timestamp("2018-04-11"), "2018-04-11"])
def test_date_levels_day_month_year_suppressed(value) -> None:
    """GB/T 39725 §10.2 c 3; Table 6: year-month or year only."""
    h = date_levels()
    series = pd.Series([value])
    assert [h.apply(series, lv).iloc[0] for lv in range(1, 4)] == ["2018-04", "2018", "*"]
    assert h.apply(series, 0).iloc[0] == value


def test_missing_values_stay_missing_below_the_top_and_join_everyone_at_it() -> None:
    """A blank stays a class of its own until the top level, where nothing is known of anyone:
    a blank and a '*' there would otherwise be two classes (one possibly below k)."""
    for h in hierarchies().values():
        for level in range(h.height):
            assert h.apply(pd.Series([None, None], dtype=object), level).isna().all()
        top = h.apply(pd.Series([None, "x"], dtype=object), h.height)
        assert top.tolist() == ["*", "*"]


def test_region_tree_climbs_county_city_province() -> None:
    """GB/T 39725 §10.2 c 1: county -> city -> province."""
    h = region_hierarchy(DATA_CATALOG / "reference" / "regions.csv")
    series = pd.Series(["东城区", "马尔康市", "不存在县"])
    assert h.apply(series, 1).tolist() == ["北京市", "阿坝藏族羌族自治州", "*"]
    assert h.apply(series, 2).tolist() == ["北京市", "四川省", "*"]
    assert set(h.apply(series, 3)) == {"*"}


def test_categorical_tree_refuses_levels_that_do_not_nest() -> None:
    with pytest.raises(DeidentificationError, match="do not nest"):
        categorical_tree([{"a": "X", "b": "X"}, {"a": "P", "b": "Q"}], name="area")


def test_load_hierarchies_reads_the_shipped_policy() -> None:
    loaded = load_hierarchies()
    assert {name: h.height for name, h in loaded.items()} == {
        "age": 4, "postcode": 6, "date": 3, "area": 3, "sex": 1, "interval": 4, "icd10": 4,
        "suppress": 1}
    assert loaded["age"].apply(pd.Series([38]), 1).iloc[0] == "35-39"


def test_load_hierarchies_refuses_an_unknown_type_naming_file_and_rule(tmp_path: Path) -> None:
    text = (hier.HIERARCHY_FILE.read_text(encoding="utf-8")
            .replace("{type: suppress_only}", "{type: blur}"))
    policies, reference = tmp_path / "policies", tmp_path / "reference"
    policies.mkdir()
    reference.mkdir()
    for name in ("regions.csv", "icd10_blocks.csv"):
        (reference / name).write_bytes((DATA_CATALOG / "reference" / name).read_bytes())
    (policies / "deidentify_hierarchies.yaml").write_text(text, encoding="utf-8")
    with pytest.raises(PolicyFileError,
                       match="rule '(sex|suppress)' has unknown hierarchy type 'blur'"):
        load_hierarchies(policies / "deidentify_hierarchies.yaml")


# --- anonymise (§10.2 e) ---------------------------------------------------------------------


@settings(max_examples=40, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(50, 400), seed=st.integers(0, 2**32 - 1),
       prefixes=st.integers(1, 4), max_suppression=st.sampled_from([0.0, 0.02, 0.05, 0.1]),
       k=st.sampled_from([2, 5, 10]))
def test_anonymise_never_releases_a_table_below_k(n, seed, prefixes, max_suppression, k) -> None:
    """GB/T 39725 §10.2 e: either every class has >= k rows within the budget, or it raises."""
    df = synthetic(n, seed, PREFIXES[:prefixes])
    try:
        result = anonymise(df, QIS, hierarchies(), k=k, max_suppression=max_suppression)
    except KAnonymityNotReached:
        return
    assert k_of(result.table, QIS) >= k
    assert result.k_achieved == k_of(result.table, QIS)
    assert result.suppressed <= max_suppression * n
    assert len(result.table) == n - result.suppressed
    others = ["row", "diagnosis"]
    pd.testing.assert_frame_equal(result.table[others], df.loc[result.table.index, others])


def brute_force(df, qis, hs, k, max_suppression):
    """Every node of the lattice, generalised and grouped with plain pandas."""
    n = len(df)
    best = []
    for node in itertools.product(*(range(hs[q].height + 1) for q in qis)):
        g = pd.DataFrame({q: hs[q].apply(df[q], lv).astype(str) for q, lv in zip(qis, node)})
        sizes = g.groupby(qis).size()
        suppressed = int(sizes[sizes < k].sum())
        if suppressed <= max_suppression * n:
            precision = np.mean([lv / hs[q].height for q, lv in zip(qis, node)])
            best.append((precision + suppressed / n, node))
    return min(best)[0], {node for loss, node in best if abs(loss - min(best)[0]) < 1e-12}


@pytest.mark.parametrize("seed, max_suppression", [(1, 0.05), (2, 0.1), (3, 0.0), (4, 0.05)])
def test_anonymise_returns_the_least_loss_node_of_the_whole_lattice(seed, max_suppression) -> None:
    """Optimality: the chosen node's loss is the minimum over every k-anonymous node."""
    df = synthetic(120, seed, PREFIXES[:2])
    hs = {"age": age_bands(), "sex": suppress_only("sex"), "postcode": digits_zeroed(6)}
    qis = ["age", "sex", "postcode"]
    result = anonymise(df, qis, hs, k=5, max_suppression=max_suppression)
    least, optimal_nodes = brute_force(df, qis, hs, 5, max_suppression)
    assert result.info_loss["loss"] == pytest.approx(least, abs=1e-12)
    assert tuple(result.levels[q] for q in qis) in optimal_nodes
    assert result.info_loss["nodes_evaluated"] <= result.info_loss["lattice_size"]


def test_anonymise_prunes_the_lattice() -> None:
    result = anonymise(synthetic(3000, 7), QIS, hierarchies(), k=5)
    assert result.info_loss["nodes_evaluated"] < result.info_loss["lattice_size"] / 2
    assert result.info_loss["precision"] <= result.info_loss["loss"]
    assert result.info_loss["avg_class_size_ratio"] >= 1.0


def test_when_l_diversity_is_asked_then_every_class_has_l_distinct_values() -> None:
    """GB/T 39725 §11.4.2.4: classes with too few distinct diagnoses are suppressed or merged."""
    df = synthetic(400, 11)
    result = anonymise(df, QIS, hierarchies(), k=5, max_suppression=0.05,
                       sensitive="diagnosis", l=3)
    distinct = result.table.groupby(QIS, dropna=False)["diagnosis"].nunique()
    assert distinct.min() >= 3 and result.l_diversity == distinct.min()
    assert k_of(result.table, QIS) >= 5
    plain = anonymise(df, QIS, hierarchies(), k=5)
    assert plain.l_diversity is None
    assert result.info_loss["loss"] >= plain.info_loss["loss"]


def test_when_k_cannot_be_reached_then_steward_is_told_what_to_do() -> None:
    """GB/T 39725 §10.2 e: four patients can never form a class of five."""
    df = synthetic(4, 5)
    with pytest.raises(KAnonymityNotReached) as info:
        anonymise(df, QIS, hierarchies(), k=5)
    message = str(info.value)
    assert info.value.best_k == 4 and isinstance(info.value, SeqlifeError)
    assert info.value.stage == "deidentify"
    for words in ("k = 5", "k = 4", "§10.2 e", "widen the hierarchies", "suppression budget",
                  "drop a quasi-identifier"):
        assert words in message
    assert not any(str(v) in message for v in df["postcode"])


def test_when_a_hierarchy_stops_short_of_star_then_best_reachable_k_is_reported() -> None:
    df = pd.DataFrame({"sex": ["F"] * 8 + ["M"] * 2})
    no_top = Hierarchy("sex", (lambda s: s, lambda s: s))
    with pytest.raises(KAnonymityNotReached) as info:
        anonymise(df, ["sex"], {"sex": no_top}, k=5, max_suppression=0.0)
    assert info.value.best_k == 2
    result = anonymise(df, ["sex"], {"sex": no_top}, k=5, max_suppression=0.2)
    assert result.suppressed == 2 and result.k_achieved == 8


def test_empty_table_is_released_empty() -> None:
    result = anonymise(synthetic(0, 1), QIS, hierarchies(), k=5)
    assert result.table.empty and result.suppressed == 0 and result.classes == 0


def test_missing_arguments_are_refused() -> None:
    with pytest.raises(DeidentificationError, match="No generalisation hierarchy"):
        anonymise(synthetic(50, 1), QIS, {"age": age_bands()}, k=5)
    with pytest.raises(DeidentificationError, match="sensitive column"):
        anonymise(synthetic(50, 1), QIS, hierarchies(), k=5, l=2)


# --- re-identification test (§11.4.2.4; RARE §4.5) ---------------------------------------------


def classes_1_2_5() -> pd.DataFrame:
    return pd.DataFrame({"age": ["<25"] + ["25-29"] * 2 + ["30-34"] * 5, "sex": ["F"] * 8})


def test_risk_metrics_on_classes_of_sizes_1_2_5() -> None:
    report = assess(classes_1_2_5(), ["age", "sex"])
    assert report.prosecutor_max == 1.0
    assert report.uniqueness == pytest.approx(1 / 8)
    assert report.prosecutor_avg == pytest.approx(3 / 8)
    assert report.marketer == pytest.approx(3 / 8)
    assert report.records_at_risk == pytest.approx(3 / 8)
    assert report.journalist_max == 1.0
    assert np.isnan(report.linkage_reidentified)


def test_journalist_risk_uses_the_population_class_sizes() -> None:
    population = pd.DataFrame({"age": ["<25"] * 10 + ["25-29"] * 20 + ["30-34"] * 50,
                               "sex": ["F"] * 80})
    report = assess(classes_1_2_5(), ["age", "sex"], population=population)
    assert report.journalist_max == pytest.approx(1 / 10)
    assert report.marketer == pytest.approx((1 / 10 + 2 / 20 + 5 / 50) / 8)
    assert report.prosecutor_max == 1.0


def test_linkage_attack_finds_the_unique_raw_record() -> None:
    """RARE §4.5: the raw record alone in its generalised class is re-linked for sure; one in a
    class of m released records with probability 1/m (expected share (1 + 2/2 + 5/5) / 8)."""
    raw = pd.DataFrame({"age": [22, 26, 27, 30, 31, 32, 33, 34], "sex": ["F"] * 8})
    h = age_bands()
    report = assess(classes_1_2_5(), ["age", "sex"], raw=raw,
                    raw_generalise=lambda r: r.assign(age=h.apply(r["age"], 1)))
    assert report.linkage_unique == pytest.approx(1 / 8)
    assert report.linkage_reidentified == pytest.approx(3 / 8)


def test_linkage_attack_counts_only_the_right_record() -> None:
    """A raw record whose own row was suppressed, or that matches a stranger's row, is not
    re-identified (the expected share counts correct re-links only)."""
    released = pd.DataFrame({"age": ["<25", "25-29"], "sex": ["F", "F"]}, index=[0, 1])
    raw = pd.DataFrame({"age": ["25-29", "<25", "<25"], "sex": ["F", "F", "F"]}, index=[0, 1, 2])
    report = assess(released, ["age", "sex"], raw=raw)
    assert report.linkage_reidentified == 0.0
    assert report.linkage_unique == 1.0


def test_anonymised_output_passes_the_reidentification_test() -> None:
    """GB/T 39725 §11.4.2.4: after k = 5 nobody is unique or re-linked."""
    df = synthetic(600, 3)
    hs = hierarchies()
    result = anonymise(df, QIS, hs, k=5)
    report = assess(result.table, QIS, raw=df, raw_generalise=lambda raw: raw.assign(
        **{q: hs[q].apply(raw[q], lv) for q, lv in result.levels.items()}))
    check(report, {"prosecutor_max": 0.2, "uniqueness": 0.0, "linkage_reidentified": 0.2})
    assert report.prosecutor_max <= 0.2 and report.linkage_unique == 0.0


def test_check_raises_naming_the_first_metric_over_its_limit() -> None:
    report = assess(classes_1_2_5(), ["age", "sex"])
    with pytest.raises(ReidentificationRiskTooHigh) as info:
        check(report, {"records_at_risk": 0.5, "prosecutor_max": 0.2, "uniqueness": 0.0})
    assert info.value.metric == "prosecutor_max" and info.value.threshold == 0.2
    message = str(info.value)
    for words in ("prosecutor_max = 1", "limit 0.2", "§11.4.2.4", "RARE §4.5"):
        assert words in message
    check(report, {"prosecutor_max": 1.0})  # equal to the limit passes


def test_check_refuses_unknown_or_unmeasured_metrics() -> None:
    report = assess(classes_1_2_5(), ["age", "sex"])
    with pytest.raises(DeidentificationError, match="names no metric"):
        check(report, {"prosecuter_max": 0.2})
    with pytest.raises(DeidentificationError, match="not measured"):
        check(report, {"linkage_reidentified": 0.0})
    assert isinstance(report, RiskReport)


# --- purity (convention 2) ---------------------------------------------------------------------

ALLOWED_ROOTS = {"__future__", "csv", "dataclasses", "math", "pathlib", "typing", "numpy",
                 "pandas", "pyarrow", "yaml", "seqlife"}


@pytest.mark.parametrize("module", ["errors", "hierarchy", "kanon", "risk"])
def test_core_module_imports_no_framework(module: str) -> None:
    path = Path(hier.__file__).with_name(f"{module}.py")
    tree = ast.parse(path.read_text(encoding="utf-8"))
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            roots.add(node.module.split(".")[0])
    assert roots <= ALLOWED_ROOTS, roots - ALLOWED_ROOTS
