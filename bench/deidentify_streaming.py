#!/usr/bin/env python3
"""k-anonymity of a table larger than memory allows: streamed (DuckDB + pyarrow batches) versus
in memory, on the same Parquet file, in one run (issue 10).

    bench/deidentify_streaming.py [--rows N] [--repeat R]

Reports wall time and peak RSS of each path (fresh interpreters) and checks both chose the same
node and released the same number of rows. Results: bench/results/deidentify_streaming.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "bench" / ".data"
RESULTS = ROOT / "bench" / "results"

RUN = r'''
import json, resource, sys, time
from pathlib import Path
import pandas as pd
from seqlife.deidentify.hierarchy import age_bands, date_levels, digits_zeroed, suppress_only
from seqlife.deidentify.kanon import anonymise
from seqlife.deidentify.streaming import anonymise_parquet
mode, path, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
hs = {"age": age_bands(), "sex": suppress_only("sex"), "postcode": digits_zeroed(6), "date": date_levels()}
qis = ["age", "sex", "postcode", "date"]
start = time.perf_counter()
if mode == "stream":
    result = anonymise_parquet(path, out, qis, hs, 5, 0.05)
else:
    result = anonymise(pd.read_parquet(path), qis, hs, 5, 0.05)
    result.table.to_parquet(out, index=False)
print(json.dumps({"seconds": time.perf_counter() - start, "levels": result.levels,
                  "suppressed": result.suppressed,
                  "peak_rss_MB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
'''


def make_table(rows: int, path: Path, dates: str, postcodes: int) -> None:
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(5)
    writer = None
    for start in range(0, rows, 500_000):
        n = min(500_000, rows - start)
        frame = pd.DataFrame({
            "row": np.arange(start, start + n), "age": rng.integers(0, 100, n),
            "sex": rng.choice(["F", "M"], n),
            "postcode": [f"{p}{x:02d}" for p, x in zip(rng.choice(["1000", "1001", "3100", "8100"],
                                                                  n),
                                                       rng.integers(0, postcodes // 4, n))],
            "date": (pd.Timestamp("2016-01-01") + pd.to_timedelta(rng.integers(0, 1096, n),
                                                                 unit="D")).astype(str)
            .str[: 10 if dates == "day" else 7],
            "lab": rng.normal(130, 15, n).round(1)})
        table = pa.Table.from_pandas(frame, preserve_index=False)
        writer = writer or pq.ParquetWriter(path, table.schema)
        writer.write_table(table)
    writer.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--postcodes", type=int, default=40,
                        help="distinct postcodes (district level); 400 = one per street block")
    parser.add_argument("--dates", choices=("day", "month"), default="month",
                        help="granularity of the date quasi-identifier: with days nearly every row "
                             "is its own combination and streaming saves nothing")
    args = parser.parse_args()
    DATA.mkdir(parents=True, exist_ok=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = DATA / f"kanon-{args.rows}-{args.dates}-{args.postcodes}.parquet"
    if not path.exists():
        make_table(args.rows, path, args.dates, args.postcodes)
    results = {}
    for mode in ("stream", "memory"):
        runs = [json.loads(subprocess.run(
            [sys.executable, "-c", RUN, mode, str(path), str(DATA / f"kanon-out-{mode}.parquet")],
            cwd=ROOT, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
            for _ in range(args.repeat)]
        results[mode] = min(runs, key=lambda r: r["seconds"])
    same = (results["stream"]["levels"], results["stream"]["suppressed"]) == \
        (results["memory"]["levels"], results["memory"]["suppressed"])
    summary = {"rows": args.rows, "dates": args.dates, "postcodes": args.postcodes, **results,
               "same_result": same,
               "rss_ratio_stream_vs_memory": results["stream"]["peak_rss_MB"]
               / results["memory"]["peak_rss_MB"]}
    (RESULTS / f"deidentify_streaming_{args.dates}.json").write_text(
        json.dumps(summary, indent=2) + "\n")
    print(f"k = 5 on {args.rows:,} rows ({args.dates} dates): streamed {results['stream']['seconds']:.1f} s, "
          f"{results['stream']['peak_rss_MB']:.0f} MB peak; in memory "
          f"{results['memory']['seconds']:.1f} s, {results['memory']['peak_rss_MB']:.0f} MB; "
          f"same node and suppression: {same}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
