#!/usr/bin/env python3
"""Whole-lifecycle benchmark: how each stage's cost grows with the cohort (issue 10).

    bench/lifecycle.py [--subjects 10,100,1000] [--reads 40] [--variants 20]

For each N a fresh seqlife home runs synth -> collect -> classify -> deidentify -> certify ->
encrypt -> share -> destroy on N subjects (small files per subject so it fits one machine), in its
own interpreter so peak memory is per run. Reported per stage: wall time, throughput (subjects/s),
the growth exponent between consecutive sizes (log t2/t1 / log N2/N1; linear = 1.0, target <= 1.1)
and, for the mapped flows at the largest N, the orchestration share of wall time (flow wall time
not covered by any running task -- the union of task intervals -- over wall time; target < 15 %). Writes
bench/results/lifecycle.json, bench/results/lifecycle.md and bench/results/lifecycle.png.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
STAGES = ("synth", "collect", "classify", "deidentify", "certify", "encrypt", "share", "destroy")

RUN = r'''
import json, os, resource, sys, time
from datetime import timedelta
from pathlib import Path
home = Path(sys.argv[1]); subjects = int(sys.argv[2]); reads = int(sys.argv[3]); variants = int(sys.argv[4])
os.environ.update({"SEQLIFE_HOME": str(home), "SEQLIFE_ACTOR": "bench", "SEQLIFE_ROLE": "steward"})
from seqlife.cli import _prepare_prefect
from seqlife.settings import Settings
settings = Settings.from_env()
_prepare_prefect(settings, False)
from dataclasses import replace
from infra.resources import build_resources
res = build_resources(settings)
committee = build_resources(replace(settings, role="committee"))
times, orchestration = {}, {}

def timed(name, fn):
    start = time.perf_counter(); out = fn(); times[name] = time.perf_counter() - start; return out

def task_share(flow_result_id, wall):
    import asyncio
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    async def spent():
        async with get_client() as client:
            runs, offset = [], 0
            while True:
                page = await client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_result_id])), limit=200, offset=offset)
                runs += page; offset += len(page)
                if len(page) < 200:
                    break
            spans = sorted((r.start_time, r.end_time) for r in runs if r.start_time and r.end_time)
            covered, current = 0.0, None
            for start, end in spans:  # the union of task intervals: concurrent tasks count once
                if current is None or start > current[1]:
                    if current:
                        covered += (current[1] - current[0]).total_seconds()
                    current = [start, end]
                else:
                    current[1] = max(current[1], end)
            if current:
                covered += (current[1] - current[0]).total_seconds()
            return covered, len(runs)
    busy, count = asyncio.run(spent())
    return {"wall": wall, "task_time": busy, "tasks": count, "share": max(0.0, (wall - busy) / wall)}

from prefect import flow as _flow
_flow(name="warm-up")(lambda: 1)()  # the ephemeral API starts here, not inside a timed stage
from seqlife.synth import generate_cohort
cohort = home / "cohort"
timed("synth", lambda: generate_cohort(cohort, subjects=subjects, seed=3, reads_per_subject=reads, variants_per_subject=variants))
from flows.collect import collect_flow
from flows.classify import classify_flow
from flows.deidentify import deidentify_flow
from flows.certify import run_certify
from flows.encrypt import encrypt_flow
from seqlife.classify.labels import load_classify_policy
from seqlife.deidentify.tables import load_deidentify_policy
from tasks import classify, deidentify, share, destroy
from seqlife.share import rules
from seqlife.encrypt import c4gh

def run_flow(name, flow, *args):
    start = time.perf_counter()
    state = flow(*args, return_state=True)
    wall = time.perf_counter() - start
    times[name] = wall
    orchestration[name] = task_share(state.state_details.flow_run_id, wall)
    return state.result()

run_flow("collect", collect_flow, str(cohort), "cohort")
def classify_stage():
    classify_flow("cohort"); classify.approve(res, "cohort", None, [], load_classify_policy())
timed("classify", classify_stage)
derived = run_flow("deidentify", deidentify_flow, "cohort", "p1")["dataset"]
def certify_stage():
    deidentify.approve(committee, "cohort", "p1", None, load_deidentify_policy())
    run_certify(res, derived, None, "scientific_research")
timed("certify", certify_stage)
run_flow("encrypt", encrypt_flow, "cohort")
variables = ["sex", "lab_hemoglobin_g_l", "lab_alt_u_l"]
def share_stage():
    sub = share.submit(res, {"institution": "Fudan University", "applicant": "applicant-1", "project": "P-1", "funded": True,
        "qualifications": ["GCP"], "plan": {"purpose": "p", "inclusion": "i", "exclusion": "e", "variables": variables, "endpoints": "e", "analysis": "a"},
        "duo_codes": ["DUO:0000042"], "dataset": derived, "variables": variables, "records": 10**6, "destination_country": "CN", "tier": "file"})
    scores = {c: 4 for c in rules.load_share_policy()["review_criteria"]}
    for reviewer in sub["reviewers"]:
        share.vote(committee, sub["request"], reviewer, True, scores)
    decided = share.decide(committee, sub["request"], months=12, protection_measures=["m"], emergency_plan="e")
    share.deliver_file(res, decided["agreement"], c4gh.public_key_of(c4gh.new_secret_key()), home / "out")
    return decided
decided = timed("share", share_stage)
from datetime import date
timed("destroy", lambda: (destroy.sweep(res, date.fromisoformat(decided["ends"]) + timedelta(days=31)),
                          destroy.destroy(res, "dataset", "cohort", "bench")))
print(json.dumps({"subjects": subjects, "times": times, "orchestration": orchestration,
                  "peak_rss_MB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
'''


def run(subjects: int, reads: int, variants: int) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"lifecycle-{subjects}-") as home:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SEQLIFE_", "PREFECT_"))}
        out = subprocess.run([sys.executable, "-c", RUN, home, str(subjects), str(reads),
                              str(variants)], cwd=ROOT, env=env, capture_output=True, text=True)
        if out.returncode:
            raise SystemExit(f"lifecycle run with {subjects} subjects failed:\n{out.stderr[-3000:]}")
        return json.loads(out.stdout.strip().splitlines()[-1])


def exponents(runs: list[dict]) -> dict[str, list[float]]:
    growth: dict[str, list[float]] = {}
    for small, large in zip(runs, runs[1:]):
        ratio = math.log(large["subjects"] / small["subjects"])
        for stage in STAGES:
            t1, t2 = small["times"][stage], large["times"][stage]
            growth.setdefault(stage, []).append(round(math.log(t2 / t1) / ratio, 2))
    return growth


def plot(runs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [r["subjects"] for r in runs]
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for stage in STAGES:
        left.plot(sizes, [r["times"][stage] for r in runs], marker="o", label=stage)
    left.plot(sizes, [runs[0]["times"]["collect"] * n / sizes[0] for n in sizes], "k--",
              linewidth=0.8, label="linear (from collect)")
    left.set(xscale="log", yscale="log", xlabel="subjects", ylabel="wall time (s)",
             title="time per stage")
    left.legend(fontsize=7)
    right.plot(sizes, [r["peak_rss_MB"] for r in runs], marker="o")
    right.set(xscale="log", xlabel="subjects", ylabel="peak RSS (MB)", title="memory")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def markdown(runs: list[dict], growth: dict[str, list[float]]) -> str:
    sizes = [r["subjects"] for r in runs]
    lines = ["# Whole-lifecycle benchmark", "",
             "Wall time per stage (s) for N subjects; growth exponent between consecutive sizes "
             "(1.0 = linear; target <= 1.1).", "",
             "| stage | " + " | ".join(f"N = {n}" for n in sizes) + " | exponents |",
             "|---|" + "---|" * len(sizes) + "---|"]
    for stage in STAGES:
        lines.append(f"| {stage} | " + " | ".join(f"{r['times'][stage]:.2f}" for r in runs)
                     + f" | {', '.join(map(str, growth[stage]))} |")
    lines.append("| peak RSS (MB) | " + " | ".join(f"{r['peak_rss_MB']:.0f}" for r in runs)
                 + " | |")
    largest = runs[-1]
    lines += ["", f"Orchestration share of wall time at N = {largest['subjects']} (flow wall time "
              "minus task run time, over wall time; target < 15 %):", ""]
    for name, o in largest["orchestration"].items():
        lines.append(f"- {name}: {o['share'] * 100:.1f} % ({o['tasks']} task runs, wall "
                     f"{o['wall']:.2f} s)")
    lines += ["", "![time and memory against N](lifecycle.png)", ""]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subjects", default="10,100,1000")
    parser.add_argument("--reads", type=int, default=40)
    parser.add_argument("--variants", type=int, default=20)
    args = parser.parse_args()
    sizes = [int(s) for s in args.subjects.split(",")]
    runs = []
    for n in sizes:
        print(f"lifecycle with {n} subjects ...", flush=True)
        runs.append(run(n, args.reads, args.variants))
        print("  " + ", ".join(f"{k} {v:.2f} s" for k, v in runs[-1]["times"].items()), flush=True)
    growth = exponents(runs)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "lifecycle.json").write_text(json.dumps({"runs": runs, "exponents": growth},
                                                       indent=2) + "\n")
    plot(runs, RESULTS / "lifecycle.png")
    (RESULTS / "lifecycle.md").write_text(markdown(runs, growth))
    print(markdown(runs, growth))
    return 0


if __name__ == "__main__":
    sys.exit(main())
