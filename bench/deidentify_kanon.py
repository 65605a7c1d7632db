#!/usr/bin/env python3
"""k-anonymisation to k = 5 of a clinical table: ours versus anjana (PERF-ANCHORS 6e).

    .venv/bin/python bench/deidentify_kanon.py [--rows N] [--big-rows M] [--repeat R]
                                              [--skip-anjana] [--anjana-python PATH]
                                              [--skip-roles] [--roles-rows M]

Builds the PERF-ANCHORS clinical table (fixed seed; N = 100,000 rows by default): age 0-99, sex,
a 6-digit postcode with 5,000 distinct values, an admission date over 10 years and a Zipf-like
diagnosis over 200 codes. Both tools get the same hierarchies, built from ours: age exact ->
Table 6 5-year bands -> 10 -> 20 -> *, sex -> *, postcode with 1..5 low digits zeroed -> *,
date day -> year-month -> year -> *; k = 5 with at most 5 % of the rows suppressed.

Timings are in-process (time.perf_counter around the anonymisation only); ours is the median of
R runs, anjana runs once (it takes about 110 s). Each side runs in its own child interpreter and
reports its peak RSS as VmHWM (reset at exec, unlike ru_maxrss). Both results are scored with the
same metric: ARX precision (mean level / height), suppressed rows, loss = precision + suppressed
share, the discernibility metric and the smallest class.

anjana pins pandas 2 / numpy 2.0, which would downgrade the project's venv (pandas 3) and break
its other packages, so it lives in its own venv under bench/.data/anjana-venv (created on first
use: ``python -m venv`` + ``pip install anjana pyarrow``). anjana is given the table with every
quasi-identifier already at level 0 of ours (level 0 of age is top-coded, ``>89``) and its
hierarchies over those values, since it recognises a column's level by its values. With
--skip-anjana the PERF-ANCHORS figure (110.7 s, median of 3) is used instead, and the output says
so.

Then a table of M rows (default 1,000,000; target < 60 s) is anonymised the same way (median of
R runs). Results go to stdout and bench/results/deidentify_kanon.json; test data are cached in
bench/.data/.

**Roles scenario** (issue 15: the larger quasi-identifier set of the de-identification roles).
A second table of M rows (fixed seed, cached) has 7 quasi-identifiers: age 0-99, sex, a 6-digit
postcode and the county it lies in (``area``; counties drawn by population from
data_catalog/reference/regions.csv, the postcode is the county's own or one of 19 other delivery
offices of its 4-digit postal district, about 800 distinct), an ICD-10 diagnosis (Zipf-like over
the 80 codes of data_catalog/reference/icd10.csv followed by synthetic ``E11.9``-style extensions
of categories inside the WHO blocks, 1,000 distinct codes), a length of stay in days (skewed,
0-120) and the days from admission to sequencing (0-400). Hierarchies are the policy's own
(``load_hierarchies()``: age, sex, postcode, area, icd10, and interval for both day counts);
lattice 5 x 2 x 7 x 4 x 5 x 5 x 5 = 35,000 nodes. The 7-attribute search (target < 60 s and
< 1 GiB peak RSS) and the 4-attribute search on the 1 M-row table above are timed in the same run
(median [min-max] of R runs, each tool in its own child, hierarchies built before the clock
starts), and their time and memory ratios reported; the 7-attribute search also runs on a roles
table of N rows, next to anjana's 4-attribute figure at N rows. Results go to
bench/results/deidentify_kanon_roles.json (``--skip-roles`` leaves it out).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "bench" / ".data"
RESULTS = ROOT / "bench" / "results"
ANJANA_VENV = DATA / "anjana-venv"
sys.path.insert(0, str(ROOT))

ANCHOR_ANJANA_S = 110.7  # PERF-ANCHORS 6e, median of 3 (110.7 / 113.3 / 93.1 s)
ANCHOR_ANJANA_RSS_MIB = 383
QIS = ["age", "sex", "postcode", "admission_date"]
K, MAX_SUPPRESSION, SEED = 5, 0.05, 20240601
REFERENCE = ROOT / "data_catalog" / "reference"
#: The roles scenario: column -> rule of deidentify_hierarchies.yaml.
ROLE_RULES = {"age": "age", "sex": "sex", "postcode": "postcode", "area": "area",
              "diagnosis": "icd10", "length_of_stay_days": "interval",
              "admission_to_sequencing_days": "interval"}
ROLE_QIS = list(ROLE_RULES)
ROLE_CODES, ROLE_OFFICES = 1_000, 20  # distinct diagnoses; delivery offices per county
TARGET_SECONDS, TARGET_RSS_MIB = 60.0, 1024.0

VMHWM = """
def vmhwm_kib():
    for line in open('/proc/self/status'):
        if line.startswith('VmHWM:'):
            return int(line.split()[1])
"""

OURS = VMHWM + """
import json, statistics, sys, time
import pandas as pd
from seqlife.deidentify.hierarchy import (Hierarchy, age_bands, date_levels, digits_zeroed,
                                          load_hierarchies, suppress_only)
from seqlife.deidentify.kanon import anonymise, k_of

def vmrss_kib():
    for line in open('/proc/self/status'):
        if line.startswith('VmRSS:'):
            return int(line.split()[1])

table, repeat, spec = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
qis, k, ms = spec["qis"], spec["k"], spec["max_suppression"]

def hierarchies():
    if spec["hierarchies"] == "anchor":  # the PERF-ANCHORS 6e hierarchies
        return {"age": age_bands(), "sex": suppress_only("sex"), "postcode": digits_zeroed(6),
                "admission_date": date_levels()}
    policy = load_hierarchies()  # deidentify_hierarchies.yaml, renamed per column
    return {column: Hierarchy(column, policy[rule].levels, policy[rule].labels)
            for column, rule in spec["hierarchies"].items()}

df = pd.read_parquet(table)
loaded_kib = vmrss_kib()
times, cpu, r = [], [], None
t = time.perf_counter()
hierarchies()
hierarchy_seconds = time.perf_counter() - t
for _ in range(repeat):
    r = None  # the previous result is not kept alive through the next run
    h = hierarchies()
    t, c = time.perf_counter(), time.process_time()
    r = anonymise(df, qis, h, k=k, max_suppression=ms)
    times.append(time.perf_counter() - t)
    cpu.append(time.process_time() - c)
peak_kib = vmhwm_kib()  # before the k check below, which is not part of the search
print("RESULT " + json.dumps({
    "seconds": statistics.median(times), "min_seconds": min(times), "max_seconds": max(times),
    "runs": times, "cpu_seconds": statistics.median(cpu), "cpu_runs": cpu, "levels": r.levels,
    "suppressed": r.suppressed, "k": k_of(r.table, qis),
    "k_achieved": r.k_achieved, "classes": r.classes, "info_loss": r.info_loss,
    "hierarchy_build_seconds": hierarchy_seconds,
    "rss_after_load_MiB": loaded_kib / 1024, "peak_rss_MiB": peak_kib / 1024}))
"""

ANJANA = VMHWM + """
import io, json, contextlib, sys, time
import numpy as np, pandas as pd
from anjana.anonymity._k_anonymity import k_anonymity_inner
df = pd.read_parquet(sys.argv[1])  # the quasi-identifiers already at level 0 of ours
spec = json.loads(open(sys.argv[2]).read())
H = {q: {int(level): np.array(values) for level, values in levels.items()}
     for q, levels in spec.items()}
qis, k, pct = json.loads(sys.argv[3])
n = len(df)
t = time.perf_counter()
with contextlib.redirect_stdout(io.StringIO()):
    # anjana.anonymity.k_anonymity is this call with the suppressed count and levels dropped;
    # its levels must come from here, since zeroed postcodes (100000) belong to several levels.
    out, _, gen_level = k_anonymity_inner(df, ["patient_id"], qis, k, pct, H)
seconds = time.perf_counter() - t
levels = {q: int(gen_level[q]) for q in qis}
sizes = out.groupby(qis, dropna=False).size().to_numpy() if len(out) else np.array([0])
suppressed = n - len(out)
print("RESULT " + json.dumps({
    "seconds": seconds, "levels": levels, "suppressed": suppressed, "k": int(sizes.min()),
    "classes": int(len(sizes)),
    "discernibility": float((sizes.astype(float) ** 2).sum() + suppressed * n),
    "peak_rss_MiB": vmhwm_kib() / 1024}))
"""


def hierarchies():
    from seqlife.deidentify.hierarchy import age_bands, date_levels, digits_zeroed, suppress_only

    return {"age": age_bands(), "sex": suppress_only("sex"), "postcode": digits_zeroed(6),
            "admission_date": date_levels()}


def build_table(rows: int) -> Path:
    """The PERF-ANCHORS clinical table, cached as parquet."""
    path = DATA / f"kanon-clinical-{rows}.parquet"
    if path.exists():
        return path
    rng = np.random.default_rng(SEED)
    postcodes = rng.choice(np.arange(100_000, 1_000_000), 5_000, replace=False).astype(str)
    weights = 1.0 / np.arange(1, 201) ** 1.1
    codes = np.array([f"{chr(65 + i % 26)}{i // 26:02d}.{i % 10}" for i in range(200)])
    table = pd.DataFrame({
        "patient_id": [f"P{i:07d}" for i in range(rows)],
        "age": rng.integers(0, 100, rows),
        "sex": rng.choice(np.array(["F", "M"]), rows),
        "postcode": postcodes[rng.integers(0, len(postcodes), rows)],
        "admission_date": (pd.Timestamp("2014-01-01")
                           + pd.to_timedelta(rng.integers(0, 3652, rows), unit="D")),
        "diagnosis": codes[rng.choice(200, rows, p=weights / weights.sum())],
    })
    table.to_parquet(path, index=False)
    return path


def _icd10_codes(rng: np.random.Generator, count: int) -> np.ndarray:
    """The reference codes (most frequent first), then synthetic ``E11.9``-style extensions of
    categories that lie in a WHO block, ``count`` distinct codes in frequency-rank order."""
    real = pd.read_csv(REFERENCE / "icd10.csv", dtype=str)["code"].tolist()
    blocks = pd.read_csv(REFERENCE / "icd10_blocks.csv", dtype=str)
    blocks = blocks[blocks["level"] == "block"]
    categories = [f"{letter}{number:02d}" for letter in "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                  for number in range(100)]
    in_block = [c for c in categories
                if ((blocks["first"] <= c) & (c <= blocks["last"])).any()]
    extensions = [f"{c}.{d}" for c in in_block for d in range(10)]
    extensions = [e for e in rng.permutation(np.array(extensions)) if e not in set(real)]
    return np.array(real + extensions[: count - len(real)])


def build_roles_table(rows: int) -> Path:
    """The roles-scenario table with 7 quasi-identifiers (see the module docstring), cached."""
    path = DATA / f"kanon-roles-{rows}.parquet"
    if path.exists():
        return path
    rng = np.random.default_rng(SEED + 15)  # issue 15
    regions = pd.read_csv(REFERENCE / "regions.csv", dtype={"postcode": str})
    county = rng.choice(len(regions), rows,
                        p=(regions["population"] / regions["population"].sum()).to_numpy())
    # The county's own postcode (office 0) or another delivery office of its 4-digit district.
    offices = np.array([[pc] + [pc[:4] + f"{o:02d}" for o in rng.choice(
        [o for o in range(100) if f"{o:02d}" != pc[4:]], ROLE_OFFICES - 1, replace=False)]
        for pc in regions["postcode"]])
    office = np.where(rng.random(rows) < 0.3, 0, rng.integers(0, ROLE_OFFICES, rows))
    codes = _icd10_codes(rng, ROLE_CODES)
    weights = 1.0 / np.arange(1, len(codes) + 1) ** 1.1
    stay = np.clip(np.round(rng.lognormal(1.6, 0.8, rows)), 0, 120).astype(np.int64)
    to_sequencing = np.where(rng.random(rows) < 0.7, rng.gamma(2.0, 12.0, rows),
                             rng.uniform(0, 401, rows))
    table = pd.DataFrame({
        "patient_id": [f"P{i:07d}" for i in range(rows)],
        "age": rng.integers(0, 100, rows),
        "sex": rng.choice(np.array(["F", "M"]), rows),
        "postcode": offices[county, office],
        "area": regions["county"].to_numpy()[county],
        "diagnosis": codes[rng.choice(len(codes), rows, p=weights / weights.sum())],
        "length_of_stay_days": stay,
        "admission_to_sequencing_days": np.clip(np.floor(to_sequencing), 0, 400).astype(np.int64),
    })
    table.to_parquet(path, index=False)
    return path


def anjana_hierarchies(table: Path) -> tuple[Path, Path]:
    """anjana's format, {qi: {level: values aligned with the distinct level-0 values}}, from ours,
    and the table with every quasi-identifier at level 0 (anjana recognises a column's level by
    its values, and level 0 of ours is not always the raw value: ages over 89 are ``>89``)."""
    df = pd.read_parquet(table)
    df["admission_date"] = df["admission_date"].dt.strftime("%Y-%m-%d")
    spec = {}
    for q, h in hierarchies().items():
        raw = pd.Series(sorted(df[q].unique()))
        distinct = pd.Series(h.apply(raw, 0).unique())
        spec[q] = {level: [v.item() if hasattr(v, "item") else v for v in h.apply(raw, level)
                           .groupby(h.apply(raw, 0).to_numpy(), sort=False).first()
                           .reindex(distinct.to_numpy())]
                   for level in range(h.height + 1)}
        df[q] = h.apply(df[q], 0).to_numpy(dtype=object)
    path = table.with_suffix(".anjana-hierarchies.json")
    path.write_text(json.dumps(spec))
    level0 = table.with_suffix(".anjana.parquet")
    df.to_parquet(level0, index=False)
    return path, level0


def child(python: str, code: str, *args: str) -> dict:
    out = subprocess.run([python, "-c", code, *args], capture_output=True, text=True, cwd=ROOT,
                         check=False)
    if out.returncode:
        sys.stderr.write(out.stderr)
        raise SystemExit(f"benchmark child {Path(python).name} failed (exit {out.returncode})")
    line = next(x for x in out.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def run_ours(table: Path, repeat: int, qis: list[str] = QIS,
             hierarchy_rules: str | dict[str, str] = "anchor") -> dict:
    """Our search in a child interpreter: median of ``repeat`` runs, peak RSS as VmHWM."""
    spec = {"qis": qis, "k": K, "max_suppression": MAX_SUPPRESSION,
            "hierarchies": hierarchy_rules}
    return child(sys.executable, OURS, str(table), str(repeat), json.dumps(spec))


def ensure_anjana(python: Path) -> bool:
    if python.exists():
        return True
    print(f"creating {ANJANA_VENV} with anjana (kept out of the project venv) ...", flush=True)
    base = Path(sys.base_prefix) / "bin" / "python3"
    subprocess.run([str(base), "-m", "venv", str(ANJANA_VENV)], check=True)
    subprocess.run([str(ANJANA_VENV / "bin" / "pip"), "install", "-q", "anjana", "pyarrow"],
                   check=True)
    return python.exists()


def score(levels: dict, suppressed: int, n: int) -> dict:
    heights = {q: h.height for q, h in hierarchies().items()}
    precision = sum(levels[q] / heights[q] for q in QIS) / len(QIS)
    return {"precision": precision, "suppressed": suppressed,
            "loss": precision + suppressed / n}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--big-rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-anjana", action="store_true")
    parser.add_argument("--anjana-python", type=Path, default=ANJANA_VENV / "bin" / "python")
    parser.add_argument("--skip-roles", action="store_true",
                        help="leave out the 7-attribute roles scenario")
    parser.add_argument("--roles-rows", type=int, default=None,
                        help="rows of the roles table (default: --big-rows)")
    args = parser.parse_args()
    roles_rows = args.roles_rows or args.big_rows
    DATA.mkdir(parents=True, exist_ok=True)
    RESULTS.mkdir(parents=True, exist_ok=True)

    table = build_table(args.rows)
    ours = run_ours(table, args.repeat)
    ours_score = score(ours["levels"], ours["suppressed"], args.rows)
    print(f"ours   k=5 on {args.rows:,} rows: {ours['seconds']:.3f} s (median of {args.repeat}), "
          f"levels {ours['levels']}, suppressed {ours['suppressed']}, k {ours['k']}, "
          f"precision {ours_score['precision']:.4f}, loss {ours_score['loss']:.4f}, "
          f"{int(ours['info_loss']['nodes_evaluated'])} of "
          f"{int(ours['info_loss']['lattice_size'])} nodes evaluated, "
          f"peak RSS {ours['peak_rss_MiB']:.0f} MiB", flush=True)

    anjana: dict
    if args.skip_anjana or not ensure_anjana(args.anjana_python):
        anjana = {"seconds": ANCHOR_ANJANA_S, "source": "PERF-ANCHORS 6e (not re-run)",
                  "peak_rss_MiB": ANCHOR_ANJANA_RSS_MIB,
                  "levels": {"age": 1, "sex": 0, "postcode": 6, "admission_date": 2},
                  "note": "anchor result: k=8, postcode *, date year, age 5-year bands; "
                          "suppressed rows not recorded in the anchor"}
        print(f"anjana skipped: using the PERF-ANCHORS 6e figure {ANCHOR_ANJANA_S} s", flush=True)
    else:
        spec, level0 = anjana_hierarchies(table)
        print("anjana k_anonymity (one run, about 110 s) ...", flush=True)
        anjana = child(str(args.anjana_python), ANJANA, str(level0), str(spec),
                       json.dumps([QIS, K, MAX_SUPPRESSION * 100]))
        anjana["source"] = "measured in this run"
        anjana.update(score(anjana["levels"], anjana["suppressed"], args.rows))
        print(f"anjana k=5 on {args.rows:,} rows: {anjana['seconds']:.1f} s, levels "
              f"{anjana['levels']}, suppressed {anjana['suppressed']}, k {anjana['k']}, "
              f"precision {anjana['precision']:.4f}, loss {anjana['loss']:.4f}, "
              f"peak RSS {anjana['peak_rss_MiB']:.0f} MiB", flush=True)
    ratio = anjana["seconds"] / ours["seconds"]
    anchor_ratio = ANCHOR_ANJANA_S / ours["seconds"]
    print(f"speed ratio anjana / ours: {ratio:.0f}x (target >= 50x; anjana {anjana['source']}); "
          f"against the PERF-ANCHORS 6e figure ({ANCHOR_ANJANA_S} s): {anchor_ratio:.0f}x",
          flush=True)

    big_table = build_table(args.big_rows)
    big = run_ours(big_table, args.repeat)
    big_score = score(big["levels"], big["suppressed"], args.big_rows)
    print(f"ours   k=5 on {args.big_rows:,} rows: {big['seconds']:.2f} s "
          f"[{big['min_seconds']:.2f}-{big['max_seconds']:.2f}] (median of {args.repeat}; "
          f"target < 60 s), levels {big['levels']}, suppressed {big['suppressed']}, k {big['k']}, "
          f"loss {big_score['loss']:.4f}, peak RSS {big['peak_rss_MiB']:.0f} MiB", flush=True)

    results = {
        "table": {"rows": args.rows, "quasi_identifiers": QIS, "k": K,
                  "max_suppression": MAX_SUPPRESSION, "seed": SEED,
                  "hierarchies": "age exact/5y(Table 6)/10y/20y/*, sex/*, postcode 6->1 digits/*, "
                                 "date day/month/year/*"},
        "ours": {**ours, **ours_score},
        "anjana": anjana,
        "ratio_anjana_over_ours": ratio,
        "ratio_anchor_6e_over_ours": anchor_ratio,
        "big": {"rows": args.big_rows, **big, **big_score},
        "targets": {"ratio_anjana_over_ours": ">= 50", "big_seconds": "< 60"},
        "date": time.strftime("%Y-%m-%d"),
    }
    (RESULTS / "deidentify_kanon.json").write_text(json.dumps(results, indent=2) + "\n")
    if not args.skip_roles:
        roles(args, roles_rows, big, anjana, ours)
    return 0


def _summary(label: str, rows: int, qis: int, r: dict) -> str:
    info = r["info_loss"]
    return (f"{label:<26} {rows:>9,} {qis:>3} {r['seconds']:>7.2f} "
            f"[{r['min_seconds']:.2f}-{r['max_seconds']:.2f}] {r['cpu_seconds']:>7.2f} "
            f"{r['peak_rss_MiB']:>6.0f} "
            f"{int(info['nodes_evaluated']):>6}/{int(info['lattice_size']):<6} {r['k']:>3} "
            f"{r['suppressed']:>6} {info['precision']:.4f}")


def _scenario(r: dict, rows: int, qis: list[str]) -> dict:
    info = r["info_loss"]
    return {"rows": rows, "quasi_identifiers": qis, "median_seconds": r["seconds"],
            "min_seconds": r["min_seconds"], "max_seconds": r["max_seconds"], "runs": r["runs"],
            "median_cpu_seconds": r["cpu_seconds"], "cpu_runs": r["cpu_runs"],
            "peak_rss_MiB": r["peak_rss_MiB"], "rss_after_load_MiB": r["rss_after_load_MiB"],
            "hierarchy_build_seconds": r["hierarchy_build_seconds"],
            "lattice_size": int(info["lattice_size"]),
            "nodes_evaluated": int(info["nodes_evaluated"]), "levels": r["levels"],
            "k_achieved": r["k"], "classes": r["classes"], "suppressed": r["suppressed"],
            "precision": info["precision"], "loss": info["loss"],
            "discernibility": info["discernibility"]}


def roles(args: argparse.Namespace, rows: int, four: dict, anjana: dict, four_small: dict) -> None:
    """The 7-attribute roles search on ``rows`` rows next to the 4-attribute one of this run."""
    table = build_roles_table(rows)
    print(f"roles: 7 quasi-identifiers {ROLE_QIS} on {rows:,} rows (median of {args.repeat}) ...",
          flush=True)
    seven = run_ours(table, args.repeat, ROLE_QIS, ROLE_RULES)
    small = None
    if args.rows and args.rows != rows:
        small = run_ours(build_roles_table(args.rows), args.repeat, ROLE_QIS, ROLE_RULES)
    time_ratio = seven["seconds"] / four["seconds"]
    cpu_ratio = seven["cpu_seconds"] / four["cpu_seconds"]
    rss_ratio = seven["peak_rss_MiB"] / four["peak_rss_MiB"]
    df = pd.read_parquet(table, columns=ROLE_QIS)
    distinct = {q: int(df[q].nunique()) for q in ROLE_QIS}
    del df

    print(f"{'search':<26} {'rows':>9} {'QIs':>3} {'median s':>7} [min-max] {'CPU s':>7} "
          f"{'MiB':>6} "
          f"{'nodes/lattice':>13} {'k':>3} {'supp':>6} precision")
    print(_summary("ours, 7 QIs (roles)", rows, len(ROLE_QIS), seven))
    print(_summary("ours, 4 QIs (anchor)", args.big_rows, len(QIS), four))
    if small is not None:
        print(_summary("ours, 7 QIs (roles)", args.rows, len(ROLE_QIS), small))
    print(_summary("ours, 4 QIs (anchor)", args.rows, len(QIS), four_small))
    print(f"{'anjana, 4 QIs (anchor)':<26} {args.rows:>9,} {len(QIS):>3} "
          f"{anjana['seconds']:>7.2f} ({anjana['source']}), peak RSS "
          f"{anjana['peak_rss_MiB']:.0f} MiB")
    meets = seven["seconds"] < TARGET_SECONDS and seven["peak_rss_MiB"] < TARGET_RSS_MIB
    print(f"7 QIs / 4 QIs on {rows:,} rows: time {time_ratio:.1f}x (CPU time "
          f"{seven['cpu_seconds']:.2f} / {four['cpu_seconds']:.2f} s = {cpu_ratio:.1f}x), "
          f"peak RSS {rss_ratio:.2f}x; "
          f"target < {TARGET_SECONDS:.0f} s and < {TARGET_RSS_MIB:.0f} MiB: "
          f"{'met' if meets else 'MISSED'}", flush=True)
    anjana_over_seven = anjana["seconds"] / small["seconds"] if small is not None else None
    if anjana_over_seven is not None:
        print(f"anjana (4 QIs) / ours (7 QIs) on {args.rows:,} rows: {anjana_over_seven:.0f}x; "
              f"anjana / ours (4 QIs): {anjana['seconds'] / four_small['seconds']:.0f}x",
              flush=True)

    results = {
        "table": {"rows": rows, "quasi_identifiers": ROLE_QIS, "hierarchy_rules": ROLE_RULES,
                  "distinct_values": distinct, "k": K, "max_suppression": MAX_SUPPRESSION,
                  "seed": SEED + 15,
                  "generator": "age 0-99 uniform; sex F/M; county by population from "
                               "reference/regions.csv, postcode = its own or one of "
                               f"{ROLE_OFFICES - 1} other offices of its 4-digit district; "
                               "diagnosis Zipf(1.1) over reference/icd10.csv + synthetic "
                               "category.digit extensions inside WHO blocks; length of stay "
                               "round(lognormal(1.6, 0.8)) clipped 0-120; admission to "
                               "sequencing 70 % gamma(2, 12) + 30 % uniform, 0-400"},
        "roles_7qi": _scenario(seven, rows, ROLE_QIS),
        "anchor_4qi": _scenario(four, args.big_rows, QIS),
        "ratio_time_7qi_over_4qi": time_ratio,
        "ratio_cpu_time_7qi_over_4qi": cpu_ratio,
        "ratio_peak_rss_7qi_over_4qi": rss_ratio,
        "small": {
            "rows": args.rows,
            "roles_7qi": _scenario(small, args.rows, ROLE_QIS) if small is not None else None,
            "anchor_4qi": _scenario(four_small, args.rows, QIS),
            "anjana_4qi": anjana,
            "ratio_anjana_4qi_over_ours_4qi": anjana["seconds"] / four_small["seconds"],
            "ratio_anjana_4qi_over_ours_7qi": anjana_over_seven,
        },
        "targets": {"roles_7qi_seconds": f"< {TARGET_SECONDS:.0f}",
                    "roles_7qi_peak_rss_MiB": f"< {TARGET_RSS_MIB:.0f}", "met": meets},
        "repeat": args.repeat,
        "command": " ".join(["bench/deidentify_kanon.py", *sys.argv[1:]]),
        "cpus": os.cpu_count(),
        "load_average_1min_at_end": os.getloadavg()[0],
        "date": time.strftime("%Y-%m-%d"),
    }
    (RESULTS / "deidentify_kanon_roles.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
