"""Lineage core: the chain from results back to raw data (GB/T 39725 §11.3.4.6 b 2) and from raw
data forward to everything shared (§11.3.4.8 c), inherited grades, and DVC's files."""

from __future__ import annotations

import hashlib

import pytest

from seqlife.lineage import (
    Artifact,
    ArtifactNotRecorded,
    LineageError,
    LineageStage,
    build_graph,
    chain,
    chain_back,
    chain_forward,
    check_new_stage,
    dump_lineage,
    inherited_grade,
    load_lineage,
    render_cmd,
    render_dvc_lock,
    render_dvc_yaml,
    stage_name,
)

POLICY = "ab" * 32


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def art(dataset: str, version: int, path: str, md5: bool = True) -> Artifact:
    return Artifact(dataset, version, path, sha(f"{dataset}{version}{path}"),
                    md5=hashlib.md5(path.encode()).hexdigest() if md5 else "",
                    size=len(path) if md5 else -1)


RAW_TABLE = art("cohort", 1, "tables/clinical.parquet")
RAW_VCF = art("cohort", 1, "seq/S1.vcf.gz")
RAW_CONSENTS = art("cohort", 1, "tables/consents.parquet")
DEID_TABLE = art("cohort--p1", 1, "tables/clinical.parquet")
DEID_VCF = art("cohort--p1", 1, "seq/XQZ.vcf.gz")
SUMMARY = art("cohort--p1-summary", 1, "tables/cohort_summary.parquet")

COLLECT = LineageStage("collect-cohort-v1", "collect", (), (RAW_TABLE, RAW_VCF, RAW_CONSENTS),
                       "run-collect", POLICY, {"dataset": "cohort", "scenario": "research"})
DEIDENTIFY = LineageStage("deidentify-cohort--p1-v1", "deidentify", (RAW_TABLE, RAW_VCF),
                          (DEID_TABLE, DEID_VCF), "run-deid", POLICY,
                          {"dataset": "cohort", "project": "p1"})
SUMMARISE = LineageStage("summary-cohort--p1-summary-v1", "summary", (DEID_TABLE,), (SUMMARY,),
                         "run-summary", POLICY, {})
STAGES = [COLLECT, DEIDENTIFY, SUMMARISE]


@pytest.fixture
def graph():
    return build_graph(STAGES)


def names(stages: list[LineageStage]) -> list[str]:
    return [s.name for s in stages]


def test_chain_back_from_summary_reaches_raw_files_with_their_hashes(graph) -> None:
    stages = chain_back(graph, "cohort--p1-summary", 1)
    assert names(stages) == [SUMMARISE.name, DEIDENTIFY.name, COLLECT.name]
    raw = {a.path: a.sha256 for a in stages[-1].outputs}
    assert raw["tables/clinical.parquet"] == RAW_TABLE.sha256
    assert stages[-1].flow_run_id == "run-collect" and stages[-1].policy_hash == POLICY


def test_chain_forward_from_raw_reaches_everything_derived(graph) -> None:
    assert names(chain_forward(graph, "cohort", 1)) == [COLLECT.name, DEIDENTIFY.name,
                                                         SUMMARISE.name]


def test_chain_forward_from_one_file_follows_only_what_read_it(graph) -> None:
    assert names(chain_forward(graph, "cohort", 1, "tables/consents.parquet")) == [COLLECT.name]
    assert names(chain_forward(graph, "cohort--p1", 1, "seq/XQZ.vcf.gz")) == [DEIDENTIFY.name]
    assert names(chain_forward(graph, "cohort--p1", 1, "tables/clinical.parquet")) == \
        [DEIDENTIFY.name, SUMMARISE.name]


def test_chain_order_does_not_depend_on_record_order() -> None:
    shuffled = build_graph([SUMMARISE, COLLECT, DEIDENTIFY])
    assert names(chain_back(shuffled, "cohort--p1-summary", 1)) == \
        [SUMMARISE.name, DEIDENTIFY.name, COLLECT.name]


def test_chain_of_unrecorded_version_names_it(graph) -> None:
    with pytest.raises(ArtifactNotRecorded, match="cohort v2 is not in the lineage registry"):
        chain_back(graph, "cohort", 2)


def test_chain_unknown_direction_lists_the_known_ones(graph) -> None:
    with pytest.raises(LineageError, match="use one of: back, forward"):
        chain(graph, "cohort", 1, "sideways")
    assert names(chain(graph, "cohort", 1, "forward"))[-1] == SUMMARISE.name


def test_build_graph_refuses_two_writers_of_one_file() -> None:
    again = LineageStage("collect-cohort-v1-again", "collect", (), (RAW_TABLE,), "r", POLICY, {})
    with pytest.raises(LineageError, match="written by both"):
        build_graph([COLLECT, again])


def test_check_new_stage_refuses_input_with_other_bytes(graph) -> None:
    other = Artifact("cohort", 1, "tables/clinical.parquet", sha("tampered"))
    stage = LineageStage("x-v1", "summary", (other,), (art("x", 1, "t.parquet"),), "r", POLICY, {})
    with pytest.raises(LineageError, match="the stage read other bytes"):
        check_new_stage(graph, stage)


def test_check_new_stage_refuses_input_of_forgotten_version(graph) -> None:
    stage = LineageStage("x-v1", "summary", (RAW_TABLE,), (art("x", 1, "t.parquet"),), "r",
                         POLICY, {})
    with pytest.raises(LineageError, match="was destroyed"):
        check_new_stage(graph, stage, forgotten=[("cohort", 1)])
    with pytest.raises(ArtifactNotRecorded):
        check_new_stage(graph, LineageStage("y-v1", "summary", (art("elsewhere", 3, "f"),),
                                            (art("y", 1, "t"),), "r", POLICY, {}))


@pytest.mark.parametrize("path", ["../escape", "/abs", "a//b", "a/./b", ""])
def test_artifact_refuses_path_leaving_its_version_directory(path: str) -> None:
    with pytest.raises(LineageError, match="Refused artifact path"):
        Artifact("cohort", 1, path, sha("x"))


def test_stage_name_is_what_dvc_accepts() -> None:
    assert stage_name("deidentify", "cohort--p1", 2) == "deidentify-cohort--p1-v2"
    assert stage_name("collect", "run.2026", 1) == "collect-run_2026-v1"
    with pytest.raises(LineageError, match="DVC accepts letters"):
        LineageStage("a.b", "collect", (), (RAW_TABLE,), "", POLICY, {})


def test_artifact_identity_ignores_dvc_md5() -> None:
    assert Artifact("cohort", 1, "f", sha("x")) == Artifact("cohort", 1, "f", sha("x"), "0" * 32, 9)


# --- inherited grade (GB/T 39725 §6.2; DER §5) ---------------------------------------------


def test_when_derived_from_grade_4_data_then_it_inherits_grade_4(graph) -> None:
    labels = {("cohort", 1): {"grade": 4}, ("cohort--p1", 1): {"grade": 2}}
    assert inherited_grade(graph, labels, dataset="cohort--p1", version=1) == 4
    assert inherited_grade(graph, labels, dataset="cohort--p1-summary", version=1) == 4


def test_when_re_classified_and_certified_then_its_own_grade_stands(graph) -> None:
    labels = {("cohort", 1): {"grade": 4}, ("cohort--p1", 1): {"grade": 2, "certified": True}}
    assert inherited_grade(graph, labels, dataset="cohort--p1", version=1) == 2
    assert inherited_grade(graph, labels, dataset="cohort--p1-summary", version=1) == 2


def test_when_re_classified_but_not_certified_then_inheritance_still_holds(graph) -> None:
    labels = {("cohort", 1): {"grade": 4}, ("cohort--p1", 1): {"grade": 2, "certified": False}}
    assert inherited_grade(graph, labels, dataset="cohort--p1", version=1) == 4


def test_when_own_grade_is_higher_than_inputs_then_it_is_kept(graph) -> None:
    labels = {("cohort", 1): {"grade": 3}, ("cohort--p1", 1): {"grade": 5}}
    assert inherited_grade(graph, labels, dataset="cohort--p1", version=1) == 5


def test_when_raw_data_is_unclassified_then_grade_is_refused(graph) -> None:
    with pytest.raises(LineageError, match="raw data with no grade: classify it"):
        inherited_grade(graph, {}, dataset="cohort--p1", version=1)


# --- DVC files -------------------------------------------------------------------------------


def test_dvc_yaml_has_frozen_stages_with_deps_outs_and_seqlife_meta() -> None:
    doc = render_dvc_yaml(STAGES)
    deid = doc["stages"][DEIDENTIFY.name]
    assert deid["frozen"] is True
    assert deid["cmd"] == "seqlife run deidentify --dataset cohort --project p1"
    assert deid["deps"] == ["data/cohort/v1/seq/S1.vcf.gz", "data/cohort/v1/tables/clinical.parquet"]
    assert deid["outs"][1] == {"data/cohort--p1/v1/tables/clinical.parquet":
                               {"meta": {"sha256": DEID_TABLE.sha256}}}
    meta = deid["meta"]["seqlife"]
    assert (meta["flow_run_id"], meta["policy_hash"], meta["stage"]) == ("run-deid", POLICY,
                                                                         "deidentify")
    assert meta["inputs"]["data/cohort/v1/seq/S1.vcf.gz"] == RAW_VCF.sha256
    assert "deps" not in doc["stages"][COLLECT.name]


def test_dvc_lock_is_schema_2_with_md5_and_size_of_every_dep_and_out() -> None:
    lock = render_dvc_lock(STAGES)
    assert lock["schema"] == "2.0"
    deid = lock["stages"][DEIDENTIFY.name]
    assert deid["cmd"] == render_cmd(DEIDENTIFY)
    assert deid["deps"][1] == {"path": "data/cohort/v1/tables/clinical.parquet", "hash": "md5",
                               "md5": RAW_TABLE.md5, "size": RAW_TABLE.size}
    assert [o["path"] for o in deid["outs"]] == sorted(o["path"] for o in deid["outs"])
    assert set(lock["stages"]) == set(render_dvc_yaml(STAGES)["stages"])


def test_dvc_lock_refuses_artifact_without_md5() -> None:
    stage = LineageStage("c-v1", "collect", (), (art("c", 1, "f", md5=False),), "", POLICY, {})
    with pytest.raises(LineageError, match="no MD5/size recorded"):
        render_dvc_lock([stage])


def test_forgotten_version_leaves_dvc_files_but_not_the_lineage() -> None:
    forgotten = {("cohort", 1): {"at": "2026-11-01T00:00:00+00:00", "reason": "retention"}}
    doc = render_dvc_yaml(STAGES, forgotten)
    assert COLLECT.name not in doc["stages"]  # neither deps nor outs left
    assert "deps" not in doc["stages"][DEIDENTIFY.name]
    assert COLLECT.name not in render_dvc_lock(STAGES, forgotten)["stages"]
    stages, back = load_lineage(dump_lineage(STAGES, forgotten))
    assert stages == STAGES and back == forgotten
    assert [a.md5 for a in stages[0].outputs] == [a.md5 for a in COLLECT.outputs]


def test_load_lineage_refuses_unknown_schema() -> None:
    with pytest.raises(LineageError, match="schema 2"):
        load_lineage({"schema": 2, "stages": []})
