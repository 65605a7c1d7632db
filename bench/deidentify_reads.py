#!/usr/bin/env python3
"""De-identification of every read of a lab's files versus the tools a lab would use (issue 16).

    .venv/bin/python bench/deidentify_reads.py [--reads N] [--fastq-reads M] [--repeat K]

BAM: a file of N reads (default 1,000,000) whose read group, RG tags and read names carry the
lab's sample ID, as labs deliver them. Ours: ``scrub_bam`` with the sample ID in the map, which
inflates every block, renames inside every record's read name and RG tag (the record path, on
the binary records) and compresses again. Reference: ``samtools view -b`` (pysam's bundled
samtools) decoding and re-encoding the same records: the least any record rewrite costs, before
any renaming.

FASTQ: a pair of gzip FASTQ files of M reads each (default 2,000,000) named ``SMP…:RUN…:n``.
Ours: ``scrub_fastq`` on both. Reference: ``gzip -dc | sed s/SMP…/S-…/ | gzip -1`` per file,
the shell pipeline a lab would write (same output compression level as ours).

Medians with min-max of K runs (default 3), each in a fresh child interpreter (imports done
before the clock starts: a once-per-process cost) reporting its peak RSS (VmHWM) and CPU time
(user + system, its own and its subprocesses'). Ours and the reference alternate, so a change of
load on a shared machine weighs on both alike. Ratio = reference time / our time (target >=
0.5). Results go to stdout and bench/results/deidentify_reads.json; test files are cached in
bench/.data/.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "bench" / ".data"
RESULTS = ROOT / "bench" / "results"
SAMPLE, MRN = "SMP123456", "MR20000001"

CHILD = r"""
import json, resource, sys, time, subprocess
from pathlib import Path
kind, args = sys.argv[1], json.loads(sys.argv[2])
for dst in args["dst"]:
    Path(dst).unlink(missing_ok=True)
if kind in ("scrub_bam", "scrub_fastq"):  # imports are a once-per-process cost, not per file
    from seqlife.deidentify.sequencing import scrub_bam, scrub_fastq
elif kind == "samtools":
    import pysam.samtools
def cpu():
    return sum(getattr(resource.getrusage(who), field) for who in (resource.RUSAGE_SELF,
               resource.RUSAGE_CHILDREN) for field in ("ru_utime", "ru_stime"))
start, cpu_start = time.perf_counter(), cpu()
if kind == "scrub_bam":
    scrub_bam(Path(args["src"][0]), Path(args["dst"][0]), args["map"])
elif kind == "samtools":
    pysam.samtools.view("-b", "-o", args["dst"][0], args["src"][0], catch_stdout=False)
elif kind == "scrub_fastq":
    for src, dst in zip(args["src"], args["dst"]):
        scrub_fastq(Path(src), Path(dst), args["map"])
elif kind == "shell":
    for src, dst in zip(args["src"], args["dst"]):
        subprocess.run(f"gzip -dc {src} | sed 's/{args['token']}/{args['map'][args['token']]}/' "
                       f"| gzip -1 > {dst}", shell=True, check=True)
seconds, cpu_seconds = time.perf_counter() - start, cpu() - cpu_start
peak = next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM'))
print(json.dumps({"seconds": seconds, "cpu_s": cpu_seconds, "peak_rss_MB": peak / 1024}))
"""


def run(kind: str, args: dict) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, kind, json.dumps(args)], cwd=ROOT,
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def summary(runs: list[dict]) -> dict:
    seconds = [r["seconds"] for r in runs]
    return {"median_s": statistics.median(seconds), "min_s": min(seconds), "max_s": max(seconds),
            "cpu_median_s": statistics.median(r["cpu_s"] for r in runs),
            "peak_rss_MB": max(r["peak_rss_MB"] for r in runs)}


def compare(repeat: int, ours: tuple[str, dict], reference: tuple[str, dict]) -> tuple[dict, dict]:
    """Ours and the reference run alternately, so a change of load on a shared machine weighs
    on both alike."""
    runs: tuple[list[dict], list[dict]] = ([], [])
    for _ in range(repeat):
        for (kind, args), into in zip((ours, reference), runs):
            into.append(run(kind, args))
    return summary(runs[0]), summary(runs[1])


def build_bam(path: Path, reads: int) -> Path:
    if path.exists():
        return path
    import pysam

    header = {"HD": {"VN": "1.6", "SO": "unsorted"}, "SQ": [{"SN": "chr1", "LN": 248956422}],
              "RG": [{"ID": SAMPLE, "SM": MRN, "LB": "lib1", "PL": "ILLUMINA"}]}
    with pysam.AlignmentFile(str(path), "wb", header=header) as out:
        for i in range(reads):
            read = pysam.AlignedSegment(out.header)
            read.query_name = f"{SAMPLE}:RUN1234:{i}"
            read.query_sequence = "ACGTTGCA" * 19
            read.query_qualities = pysam.qualitystring_to_array("I" * 152)
            read.reference_id, read.reference_start = 0, 10000 + i * 10
            read.cigarstring, read.mapping_quality = "152M", 60
            read.set_tag("RG", SAMPLE, "Z")
            out.write(read)
    return path


def build_fastq(path: Path, reads: int, mate: int) -> Path:
    if path.exists():
        return path
    import gzip
    import random

    rng = random.Random(mate)
    with gzip.open(path, "wb", compresslevel=1) as out:
        block = []
        for i in range(reads):
            sequence = "".join(rng.choices("ACGT", k=150))
            block.append(f"@{SAMPLE}:RUN1234:{i} {mate}:N:0:ACGTACGT\n{sequence}\n+\n{'I' * 150}\n")
            if len(block) == 10000:
                out.write("".join(block).encode())
                block = []
        out.write("".join(block).encode())
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reads", type=int, default=1_000_000)
    parser.add_argument("--fastq-reads", type=int, default=2_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", choices=("bam", "fastq"),
                        help="run one half; the other half's last figures stay in the results")
    options = parser.parse_args()
    DATA.mkdir(parents=True, exist_ok=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    target = RESULTS / "deidentify_reads.json"
    result = json.loads(target.read_text()) if target.exists() and options.only else {}
    mapping = {SAMPLE: "S-benchsample", MRN: "S-benchsubject"}
    if options.only != "fastq":
        bam = build_bam(DATA / f"lab-{options.reads}.bam", options.reads)
        ours, tool = compare(
            options.repeat,
            ("scrub_bam", {"src": [str(bam)], "dst": [str(DATA / "lab-ours.bam")],
                           "map": mapping}),
            ("samtools", {"src": [str(bam)], "dst": [str(DATA / "lab-tool.bam")]}))
        result["bam"] = {"reads": options.reads, "ours": ours, "samtools_view_b": tool,
                         "ratio_reference_vs_ours": tool["median_s"] / ours["median_s"],
                         "repeat": options.repeat}
    if options.only != "bam":
        mates = [build_fastq(DATA / f"lab-{options.fastq_reads}_R{m}.fastq.gz",
                             options.fastq_reads, m) for m in (1, 2)]
        sources = [str(p) for p in mates]
        fq_ours, fq_tool = compare(
            options.repeat,
            ("scrub_fastq", {"src": sources, "map": mapping,
                             "dst": [str(DATA / f"lab-ours_R{m}.fastq.gz") for m in (1, 2)]}),
            ("shell", {"src": sources, "map": mapping, "token": SAMPLE,
                       "dst": [str(DATA / f"lab-tool_R{m}.fastq.gz") for m in (1, 2)]}))
        result["fastq_pair"] = {
            "reads_per_mate": options.fastq_reads, "ours": fq_ours, "gzip_sed_gzip1": fq_tool,
            "ratio_reference_vs_ours": fq_tool["median_s"] / fq_ours["median_s"],
            "repeat": options.repeat}
    target.write_text(json.dumps(result, indent=2))
    for name, row in (("BAM", result.get("bam")), ("FASTQ pair", result.get("fastq_pair"))):
        if row is None:
            continue
        ref = row.get("samtools_view_b") or row.get("gzip_sed_gzip1")
        print(f"{name}: ours {row['ours']['median_s']:.2f} s [{row['ours']['min_s']:.2f}-"
              f"{row['ours']['max_s']:.2f}] (CPU {row['ours']['cpu_median_s']:.2f} s), "
              f"{row['ours']['peak_rss_MB']:.0f} MB; reference {ref['median_s']:.2f} s "
              f"[{ref['min_s']:.2f}-{ref['max_s']:.2f}] (CPU {ref['cpu_median_s']:.2f} s), "
              f"{ref['peak_rss_MB']:.0f} MB; ratio {row['ratio_reference_vs_ours']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
