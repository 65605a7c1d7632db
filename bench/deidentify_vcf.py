#!/usr/bin/env python3
"""Header scrubbing of sequencing files versus the reheader tools it replaces (PERF-ANCHORS 4c).

    .venv/bin/python bench/deidentify_vcf.py [--records N] [--samples S] [--reads R] [--repeat K]
                                             [--skip-bam]

VCF: ``scrub_vcf(..., index=False)`` versus ``bcftools reheader -s names.txt`` (pysam's bundled
bcftools) on a bgzipped VCF of N records x S samples, FORMAT GT:DP:GQ (default 500,000 x 10, the
PERF-ANCHORS file). BAM: ``scrub_bam`` versus ``samtools reheader`` on a BAM of R reads (default
1,000,000). Both tools, like ours, rewrite the header and copy the body's BGZF blocks, so the ratio
(tool time / our time; target >= 0.5) measures our per-block overhead and the two SHA-256 passes
we add for the audit record. Each figure is the best of K runs, each run in a fresh interpreter so
its peak RSS (getrusage) is its own. The test files are built once and cached in bench/.data/.
Results go to stdout and bench/results/deidentify_vcf.json.
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
sys.path.insert(0, str(ROOT))

BAM_MRN = "MR20000001"
KEEP_META = ["fileformat", "fileDate", "source", "reference", "contig", "INFO", "FORMAT",
             "FILTER", "ALT"]

# One timed operation, run in a child interpreter: prints "<seconds> <peak RSS in KiB after the
# imports> <peak RSS in KiB at the end> <VmHWM in KiB>", so the RSS the operation itself adds can
# be told apart. Linux carries a parent's ru_maxrss into its children, so the parent never builds
# test data itself (that runs in its own child, `--build`) and VmHWM (reset at exec) is a check.
CHILD = """
import json, resource, sys, time
from pathlib import Path
import pysam
kind, args = sys.argv[1], json.loads(sys.argv[2])
Path(args["dst"]).unlink(missing_ok=True)  # both sides write a new file, outside the timer
if kind == "scrub_vcf":
    from seqlife.deidentify.sequencing import scrub_vcf
    mapping = dict(line.split() for line in Path(args["names"]).read_text().splitlines())
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    scrub_vcf(Path(args["src"]), Path(args["dst"]), mapping, args["keep"], index=False)
elif kind == "bcftools":
    import pysam.bcftools
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    pysam.bcftools.reheader("-s", args["names"], "-o", args["dst"], args["src"], catch_stdout=False)
elif kind == "scrub_bam":
    from seqlife.deidentify.sequencing import scrub_bam
    mapping = dict(line.split() for line in Path(args["names"]).read_text().splitlines())
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    scrub_bam(Path(args["src"]), Path(args["dst"]), mapping)
elif kind == "samtools":
    import pysam.samtools
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    pysam.samtools.reheader(args["header"], args["src"], save_stdout=args["dst"])
seconds = time.perf_counter() - start
hwm = open("/proc/self/status").read().split("VmHWM:")[1].split()[0]
print(seconds, baseline, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, hwm)
"""


def timed(kind: str, repeat: int, **args: object) -> dict:
    """Best time of ``repeat`` child runs, the largest peak RSS among them and the largest growth
    of the peak RSS during the operation (bytes)."""
    runs = []
    for _ in range(repeat):
        out = subprocess.run([sys.executable, "-c", CHILD, kind, json.dumps(args)], check=True,
                             capture_output=True, text=True, cwd=ROOT).stdout.split()
        runs.append((float(out[-4]), int(out[-3]) * 1024, int(out[-2]) * 1024,
                     int(out[-1]) * 1024))
    return {"seconds": min(r[0] for r in runs), "peak_rss_MB": max(r[2] for r in runs) / 1e6,
            "rss_growth_MB": max(r[2] - r[1] for r in runs) / 1e6,
            "vm_hwm_MB": max(r[3] for r in runs) / 1e6}


def contigs() -> tuple[tuple[str, int], ...]:
    from seqlife.synth import CONTIGS

    return CONTIGS


def vcf_sample_names(samples: int) -> list[str]:
    return [f"MR{10_000_000 + i:08d}" for i in range(samples)]


def build_in_child(kind: str, path: str, *sizes: int) -> None:
    """Build a test file in a child interpreter, so this process stays small (see CHILD)."""
    subprocess.run([sys.executable, __file__, "--build", kind, path, *map(str, sizes)], check=True,
                   cwd=ROOT)


def build_vcf(path: Path, records: int, samples: int, seed: int = 1) -> list[str]:
    """A bgzipped VCF like PERF-ANCHORS': identifying meta lines, MRN sample names, GT:DP:GQ."""
    import numpy as np
    import pysam

    names = vcf_sample_names(samples)
    rng = np.random.default_rng(seed)
    lengths = np.array([length for _, length in contigs()], dtype=np.int64)
    header = ["##fileformat=VCFv4.2", "##fileDate=20240101", "##source=bench",
              "##reference=GRCh38", "##patient_name=张三", "##bam_path=/data/张三/x.bam"]
    header += [f"##contig=<ID={name},length={length}>" for name, length in contigs()]
    header += ['##INFO=<ID=DP,Number=1,Type=Integer,Description="Total read depth">',
               '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">',
               '##FORMAT=<ID=DP,Number=1,Type=Integer,Description="Read depth">',
               '##FORMAT=<ID=GQ,Number=1,Type=Integer,Description="Genotype quality">',
               "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\t" + "\t".join(names)]
    genotypes = np.array(["0/0", "0/1", "1/1"])
    pool = [f"{gt}:{dp}:{gq}" for gt, dp, gq in zip(
        genotypes[rng.choice(3, 4096, p=(0.6, 0.3, 0.1))], rng.integers(10, 80, 4096),
        rng.integers(20, 100, 4096))]
    plain = path.with_suffix("")
    per_contig = rng.multinomial(records, lengths / lengths.sum())
    with plain.open("w", encoding="utf-8") as out:
        out.write("\n".join(header) + "\n")
        for (name, length), count in zip(contigs(), per_contig):
            positions = np.sort(rng.choice(length - 10, count, replace=False) + 1)
            refs = np.array(list("ACGT"))[rng.integers(0, 4, count)]
            alts = np.array(list("CGTA"))[rng.integers(0, 4, count)]
            depth = rng.integers(10, 400, count)
            picks = rng.integers(0, len(pool), (count, samples))
            out.writelines(
                f"{name}\t{pos}\t.\t{ref}\t{alt if alt != ref else 'N'}\t50\tPASS\tDP={dp}\t"
                f"GT:DP:GQ\t" + "\t".join(pool[i] for i in row) + "\n"
                for pos, ref, alt, dp, row in zip(positions.tolist(), refs, alts, depth.tolist(),
                                                  picks.tolist()))
    pysam.tabix_compress(str(plain), str(path), force=True)
    plain.unlink()
    return names


def build_bam(path: Path, reads: int, seed: int = 2) -> str:
    """A coordinate-sorted BAM whose header leaks an MRN (RG SM), a name (PG CL, CO)."""
    import numpy as np
    import pysam
    import pysam.samtools

    mrn = BAM_MRN
    rng = np.random.default_rng(seed)
    pool = 8192
    bases = np.frombuffer(b"ACGT", dtype=np.uint8)[rng.integers(0, 4, (pool, 150))]
    quals = (rng.integers(2, 41, (pool, 150)) + 33).astype(np.uint8)
    sequences = [row.tobytes().decode() for row in bases]
    qualities = [row.tobytes().decode() for row in quals]
    name, sample = "张三", "SMP000001"
    sam = path.with_suffix(".sam")
    with sam.open("w", encoding="utf-8") as out:
        out.write("@HD\tVN:1.6\tSO:coordinate\n")
        out.writelines(f"@SQ\tSN:{contig}\tLN:{length}\n" for contig, length in contigs())
        out.write(f"@RG\tID:{sample}\tSM:{mrn}\tLB:lib1\tPL:ILLUMINA\tDS:patient {name}\n")
        out.write(f"@PG\tID:bwa\tPN:bwa\tVN:0.7.17\tCL:bwa mem /ref/GRCh38.fa /data/{name}/"
                  f"{sample}.R1.fastq.gz\n@CO\tpatient: {name}\n")
        chrom_reads = max(1, reads // 4)  # four contigs, positions increasing in each
        positions = np.sort(rng.integers(1, 100_000_000, reads))
        picks = rng.integers(0, pool, reads)
        flags = np.where(rng.random(reads) < 0.5, 16, 0)
        for i in range(0, reads, 100_000):
            out.writelines(
                f"{sample}:RUN1:{n + 1}\t{flag}\t{contigs()[n // chrom_reads][0]}\t{pos}\t60"
                f"\t150M\t*\t0\t0\t{sequences[p]}\t{qualities[p]}\tRG:Z:{sample}\n"
                for n, pos, p, flag in zip(range(i, min(i + 100_000, reads)),
                                           positions[i:i + 100_000].tolist(),
                                           picks[i:i + 100_000].tolist(),
                                           flags[i:i + 100_000].tolist()))
    pysam.samtools.view("-b", "-o", str(path), str(sam), catch_stdout=False)
    sam.unlink()
    return mrn


def bench_vcf(records: int, samples: int, repeat: int) -> dict:
    vcf = DATA / f"deid-{records}x{samples}.vcf.gz"
    if not vcf.exists():
        print(f"building a {records:,} x {samples} VCF (cached in {DATA}) ...", flush=True)
        build_in_child("vcf", str(vcf), records, samples)
    names = vcf_sample_names(samples)
    mapping = DATA / "deid-names.txt"
    mapping.write_text("".join(f"{n} PSN-{i + 1:04d}\n" for i, n in enumerate(names)))
    subprocess.run(["cat", str(vcf)], stdout=subprocess.DEVNULL, check=True)  # page cache
    ours = timed("scrub_vcf", repeat, src=str(vcf), dst=str(DATA / "deid-ours.vcf.gz"),
                 names=str(mapping), keep=KEEP_META)
    tool = timed("bcftools", repeat, src=str(vcf), dst=str(DATA / "deid-bcf.vcf.gz"),
                 names=str(mapping))
    check_vcf(DATA / "deid-ours.vcf.gz", [f"PSN-{i + 1:04d}" for i in range(samples)])
    size = vcf.stat().st_size
    for leftover in ("deid-ours.vcf.gz", "deid-bcf.vcf.gz"):
        (DATA / leftover).unlink(missing_ok=True)
    return {"records": records, "samples": samples, "file_bytes": size,
            "scrub_vcf_s": ours["seconds"], "scrub_vcf_MBps": size / ours["seconds"] / 1e6,
            "scrub_vcf_peak_rss_MB": ours["peak_rss_MB"],
            "scrub_vcf_rss_growth_MB": ours["rss_growth_MB"],
            "scrub_vcf_vm_hwm_MB": ours["vm_hwm_MB"],
            "bcftools_reheader_s": tool["seconds"], "bcftools_peak_rss_MB": tool["peak_rss_MB"],
            "ratio_bcftools_vs_ours": tool["seconds"] / ours["seconds"]}


def check_vcf(path: Path, expected: list[str]) -> None:
    import pysam

    with pysam.VariantFile(str(path)) as vcf:
        assert list(vcf.header.samples) == expected, "sample rename failed"
        assert "patient_name" not in str(vcf.header)


def bench_bam(reads: int, repeat: int) -> dict:
    import pysam

    bam = DATA / f"deid-{reads}.bam"
    if not bam.exists():
        print(f"building a {reads:,}-read BAM (cached in {DATA}) ...", flush=True)
        build_in_child("bam", str(bam), reads)
    mrn = BAM_MRN
    mapping = DATA / "deid-bam-names.txt"
    mapping.write_text(f"{mrn} PSN-0001\n")
    with pysam.AlignmentFile(str(bam)) as source:
        header = str(source.header)
    new_header = DATA / "deid-header.sam"  # what samtools needs: the scrubbed header, made by hand
    new_header.write_text("\n".join(
        line.replace(f"SM:{mrn}", "SM:PSN-0001") for line in header.splitlines()
        if not line.startswith(("@CO", "@PG"))) + "\n")
    subprocess.run(["cat", str(bam)], stdout=subprocess.DEVNULL, check=True)
    ours = timed("scrub_bam", repeat, src=str(bam), dst=str(DATA / "deid-ours.bam"),
                 names=str(mapping))
    tool = timed("samtools", repeat, src=str(bam), dst=str(DATA / "deid-sam.bam"),
                 header=str(new_header))
    with pysam.AlignmentFile(str(DATA / "deid-ours.bam")) as scrubbed:
        assert scrubbed.header.to_dict()["RG"][0]["SM"] == "PSN-0001"
    size = bam.stat().st_size
    for leftover in ("deid-ours.bam", "deid-sam.bam"):
        (DATA / leftover).unlink(missing_ok=True)
    return {"reads": reads, "file_bytes": size, "scrub_bam_s": ours["seconds"],
            "scrub_bam_MBps": size / ours["seconds"] / 1e6,
            "scrub_bam_peak_rss_MB": ours["peak_rss_MB"],
            "scrub_bam_rss_growth_MB": ours["rss_growth_MB"],
            "scrub_bam_vm_hwm_MB": ours["vm_hwm_MB"],
            "samtools_reheader_s": tool["seconds"], "samtools_peak_rss_MB": tool["peak_rss_MB"],
            "ratio_samtools_vs_ours": tool["seconds"] / ours["seconds"]}


def main() -> int:
    if sys.argv[1:2] == ["--build"]:
        kind, path, *sizes = sys.argv[2:]
        if kind == "vcf":
            build_vcf(Path(path), int(sizes[0]), int(sizes[1]))
        else:
            build_bam(Path(path), int(sizes[0]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=500_000)
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--reads", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-bam", action="store_true")
    args = parser.parse_args()
    DATA.mkdir(parents=True, exist_ok=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    results: dict = {"repeat": args.repeat, "targets": {"ratio_bcftools_vs_ours": ">= 0.5"},
                     "vcf": bench_vcf(args.records, args.samples, args.repeat)}
    vcf = results["vcf"]
    print(f"VCF {vcf['records']:,} x {vcf['samples']} ({vcf['file_bytes'] / 1e6:.1f} MB bgzf), "
          f"best of {args.repeat}:")
    print(f"  scrub_vcf          {vcf['scrub_vcf_s']:.3f} s ({vcf['scrub_vcf_MBps']:.0f} MB/s), "
          f"peak RSS {vcf['scrub_vcf_peak_rss_MB']:.0f} MB "
          f"(+{vcf['scrub_vcf_rss_growth_MB']:.1f} MB over the imports)")
    print(f"  bcftools reheader  {vcf['bcftools_reheader_s']:.3f} s, "
          f"peak RSS {vcf['bcftools_peak_rss_MB']:.0f} MB")
    print(f"  ratio bcftools / ours {vcf['ratio_bcftools_vs_ours']:.2f} (target >= 0.5)")
    if not args.skip_bam:
        bam = results["bam"] = bench_bam(args.reads, args.repeat)
        print(f"BAM {bam['reads']:,} reads ({bam['file_bytes'] / 1e6:.0f} MB), "
              f"best of {args.repeat}:")
        print(f"  scrub_bam          {bam['scrub_bam_s']:.3f} s ({bam['scrub_bam_MBps']:.0f} "
              f"MB/s), peak RSS {bam['scrub_bam_peak_rss_MB']:.0f} MB "
              f"(+{bam['scrub_bam_rss_growth_MB']:.1f} MB over the imports)")
        print(f"  samtools reheader  {bam['samtools_reheader_s']:.3f} s, "
              f"peak RSS {bam['samtools_peak_rss_MB']:.0f} MB")
        print(f"  ratio samtools / ours {bam['ratio_samtools_vs_ours']:.2f}")
    (RESULTS / "deidentify_vcf.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
