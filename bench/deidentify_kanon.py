#!/usr/bin/env python3
"""k-anonymisation to k = 5 of a clinical table: ours versus anjana (PERF-ANCHORS 6e).

    .venv/bin/python bench/deidentify_kanon.py [--rows N] [--big-rows M] [--repeat R]
                                              [--skip-anjana] [--anjana-python PATH]

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
use: ``python -m venv`` + ``pip install anjana pyarrow``). With --skip-anjana the PERF-ANCHORS
figure (110.7 s, median of 3) is used instead, and the output says so.

Then a table of M rows (default 1,000,000; target < 60 s) is anonymised the same way. Results go
to stdout and bench/results/deidentify_kanon.json; test data are cached in bench/.data/.
"""

from __future__ import annotations

import argparse
import json
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

VMHWM = """
def vmhwm_kib():
    for line in open('/proc/self/status'):
        if line.startswith('VmHWM:'):
            return int(line.split()[1])
"""

OURS = VMHWM + """
import json, statistics, sys, time
import pandas as pd
from seqlife.deidentify.hierarchy import age_bands, date_levels, digits_zeroed, suppress_only
from seqlife.deidentify.kanon import anonymise, k_of
hierarchies = lambda: {"age": age_bands(), "sex": suppress_only("sex"),
                       "postcode": digits_zeroed(6), "admission_date": date_levels()}
df = pd.read_parquet(sys.argv[1])
repeat = int(sys.argv[2])
times = []
for _ in range(repeat):
    t = time.perf_counter()
    r = anonymise(df, %(qis)r, hierarchies(), k=%(k)d, max_suppression=%(ms)r)
    times.append(time.perf_counter() - t)
print("RESULT " + json.dumps({
    "seconds": statistics.median(times), "runs": times, "levels": r.levels,
    "suppressed": r.suppressed, "k": k_of(r.table, %(qis)r), "classes": r.classes,
    "info_loss": r.info_loss, "peak_rss_MiB": vmhwm_kib() / 1024}))
""" % {"qis": QIS, "k": K, "ms": MAX_SUPPRESSION}

ANJANA = VMHWM + """
import io, json, contextlib, sys, time
import numpy as np, pandas as pd
from anjana.anonymity._k_anonymity import k_anonymity_inner
df = pd.read_parquet(sys.argv[1])
df["admission_date"] = df["admission_date"].dt.strftime("%%Y-%%m-%%d")
spec = json.loads(open(sys.argv[2]).read())
H = {q: {int(level): np.array(values) for level, values in levels.items()}
     for q, levels in spec.items()}
qis = %(qis)r
n = len(df)
t = time.perf_counter()
with contextlib.redirect_stdout(io.StringIO()):
    # anjana.anonymity.k_anonymity is this call with the suppressed count and levels dropped;
    # its levels must come from here, since zeroed postcodes (100000) belong to several levels.
    out, _, gen_level = k_anonymity_inner(df, ["patient_id"], qis, %(k)d, %(pct)r, H)
seconds = time.perf_counter() - t
levels = {q: int(gen_level[q]) for q in qis}
sizes = out.groupby(qis, dropna=False).size().to_numpy() if len(out) else np.array([0])
suppressed = n - len(out)
print("RESULT " + json.dumps({
    "seconds": seconds, "levels": levels, "suppressed": suppressed, "k": int(sizes.min()),
    "classes": int(len(sizes)),
    "discernibility": float((sizes.astype(float) ** 2).sum() + suppressed * n),
    "peak_rss_MiB": vmhwm_kib() / 1024}))
""" % {"qis": QIS, "k": K, "pct": MAX_SUPPRESSION * 100}


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


def anjana_hierarchies(table: Path) -> Path:
    """anjana's format, {qi: {level: values aligned with the distinct raw values}}, from ours."""
    df = pd.read_parquet(table)
    df["admission_date"] = df["admission_date"].dt.strftime("%Y-%m-%d")
    spec = {}
    for q, h in hierarchies().items():
        distinct = pd.Series(sorted(df[q].unique()))
        spec[q] = {level: [v.item() if hasattr(v, "item") else v for v in h.apply(distinct, level)]
                   for level in range(h.height + 1)}
    path = table.with_suffix(".anjana-hierarchies.json")
    path.write_text(json.dumps(spec))
    return path


def child(python: str, code: str, *args: str) -> dict:
    out = subprocess.run([python, "-c", code, *args], capture_output=True, text=True, cwd=ROOT)
    if out.returncode:
        sys.stderr.write(out.stderr)
        raise SystemExit(f"benchmark child {Path(python).name} failed (exit {out.returncode})")
    line = next(x for x in out.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def run_ours(table: Path, repeat: int) -> dict:
    return child(sys.executable, OURS, str(table), str(repeat))


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
    args = parser.parse_args()
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
        spec = anjana_hierarchies(table)
        print("anjana k_anonymity (one run, about 110 s) ...", flush=True)
        anjana = child(str(args.anjana_python), ANJANA, str(table), str(spec))
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
    big = run_ours(big_table, 1)
    big_score = score(big["levels"], big["suppressed"], args.big_rows)
    print(f"ours   k=5 on {args.big_rows:,} rows: {big['seconds']:.2f} s (target < 60 s), "
          f"levels {big['levels']}, suppressed {big['suppressed']}, k {big['k']}, "
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
