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
