"""prefect.yaml names real flows: each deployment's entrypoint imports and is a Prefect flow."""

from __future__ import annotations

import importlib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_every_deployment_entrypoint_is_a_flow_named_after_its_stage() -> None:
    from prefect import Flow

    document = yaml.safe_load((ROOT / "prefect.yaml").read_text(encoding="utf-8"))
    assert document["deployments"]
    for deployment in document["deployments"]:
        path, function = deployment["entrypoint"].split(":")
        module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
        flow = getattr(module, function)
        assert isinstance(flow, Flow)
        assert flow.name == deployment["name"] and function == f"{deployment['name']}_flow"


def test_key_rotation_is_scheduled_as_the_encrypt_policy_says() -> None:
    """GB/T 39725 §8.3 Table 5: the yearly rotation's cron comes from encrypt.yaml."""
    from tasks.encrypt import load_encrypt_policy

    document = yaml.safe_load((ROOT / "prefect.yaml").read_text(encoding="utf-8"))
    rotation = next(d for d in document["deployments"] if d["name"] == "rotate_keys")
    assert [s["cron"] for s in rotation["schedules"]] == [load_encrypt_policy()["rotation_cron"]]


def test_scheduled_deployments_follow_the_destroy_policy_and_parse_as_prefect_schedules() -> None:
    """GB/T 39725 §11.4.2.6, §11.3.4.6 a 4 and b 4; SEQ §7.4.8: daily sweep and backup, monthly
    retention review, yearly drills; the crons come from destroy.yaml and Prefect accepts them."""
    from prefect.client.schemas.schedules import CronSchedule

    from seqlife.destroy import load_destroy_policy

    document = yaml.safe_load((ROOT / "prefect.yaml").read_text(encoding="utf-8"))
    crons = {d["name"]: [s["cron"] for s in d.get("schedules", [])]
             for d in document["deployments"]}
    for name, cron in load_destroy_policy()["schedules"].items():
        assert crons[name] == [cron], name
    for deployment in document["deployments"]:
        for schedule in deployment.get("schedules", []):
            CronSchedule(cron=schedule["cron"], timezone=schedule["timezone"])
