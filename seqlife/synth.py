"""Deterministic synthetic clinical-sequencing cohort (clinical table, consents, FASTQ, BAM, VCF).

The cohort deliberately carries every kind of identifier the standards name (GB/T 39725 §10.2 a-b;
RARE §3.2.4): names, resident IDs, phones, addresses, record numbers in BAM/VCF headers, and
special-disease diagnoses (§11.1.2.3), so that classification and de-identification are tested
against realistic input. Everything is drawn from ``seed``: the same seed gives byte-identical
CSV, FASTQ.gz and VCF.gz files, so tests, demos and benchmarks can rely on exact content.
"""

from __future__ import annotations

import csv
import gzip
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pysam

from seqlife.exceptions import ConfigurationError
from seqlife.ids import resident_id_check_digit

DEFAULT_REFERENCE_DIR = Path(__file__).resolve().parents[1] / "data_catalog" / "reference"

#: A table row: column name -> value (str, date, float or None).
Row = dict[str, Any]

#: Receives (what, amount): ("fastq", compressed bytes so far) while the first FASTQ grows.
Progress = Callable[[str, int], None]

CLINICAL_COLUMNS = (
    "mrn", "name", "id_number", "sex", "birth_date", "mobile", "email", "province", "city",
    "county", "street", "postcode", "employer", "insurance_no", "attending_doctor",
    "admission_date", "discharge_date", "sequencing_date", "diagnosis_icd10",
    "lab_hemoglobin_g_l", "lab_wbc_10e9_l", "lab_alt_u_l", "note",
)  # fmt: skip
DATE_COLUMNS = ("birth_date", "admission_date", "discharge_date", "sequencing_date")
LAB_COLUMNS = ("lab_hemoglobin_g_l", "lab_wbc_10e9_l", "lab_alt_u_l")
CONSENT_COLUMNS = ("mrn", "scope", "signed_on", "withdrawn_on")
SAMPLE_COLUMNS = ("sample_id", "mrn", "assay", "fastq", "bam", "vcf")

READ_LENGTH = 150
#: Reads in the pool that a grown FASTQ rotates through: ~5 MB, far beyond gzip's 32 KiB window,
#: so rotation does not compress better than fresh random reads would.
GROWTH_POOL_READS = 16_384
FASTQ_COMPRESSLEVEL = 1  # speed: a 1 GB FASTQ.gz must be written in well under 2 minutes

#: GRCh38 primary-assembly lengths, so positions look real to any tool.
CONTIGS: tuple[tuple[str, int], ...] = (
    ("chr1", 248956422), ("chr2", 242193529), ("chr3", 198295559), ("chr4", 190214555),
    ("chr5", 181538259), ("chr6", 170805979), ("chr7", 159345973), ("chr8", 145138636),
    ("chr9", 138394717), ("chr10", 133797422), ("chr11", 135086622), ("chr12", 133275309),
    ("chr13", 114364328), ("chr14", 107043718), ("chr15", 101991189), ("chr16", 90338345),
    ("chr17", 83257441), ("chr18", 80373285), ("chr19", 58617616), ("chr20", 64444167),
    ("chr21", 46709983), ("chr22", 50818468), ("chrX", 156040895), ("chrY", 57227415),
)  # fmt: skip

# Most frequent surnames first (their rank drives the weights), with pinyin for e-mail addresses.
_SURNAMES = (
    ("王", "wang"), ("李", "li"), ("张", "zhang"), ("刘", "liu"), ("陈", "chen"), ("杨", "yang"),
    ("黄", "huang"), ("赵", "zhao"), ("吴", "wu"), ("周", "zhou"), ("徐", "xu"), ("孙", "sun"),
    ("马", "ma"), ("朱", "zhu"), ("胡", "hu"), ("郭", "guo"), ("何", "he"), ("高", "gao"),
    ("林", "lin"), ("罗", "luo"), ("郑", "zheng"), ("梁", "liang"), ("谢", "xie"), ("宋", "song"),
    ("唐", "tang"), ("许", "xu"), ("韩", "han"), ("冯", "feng"), ("邓", "deng"), ("曹", "cao"),
    ("彭", "peng"), ("曾", "zeng"), ("肖", "xiao"), ("田", "tian"), ("董", "dong"), ("袁", "yuan"),
    ("潘", "pan"), ("于", "yu"), ("蒋", "jiang"), ("蔡", "cai"), ("欧阳", "ouyang"),
    ("司马", "sima"), ("诸葛", "zhuge"),
)  # fmt: skip
_SURNAME_WEIGHTS = [1 / (rank + 1) ** 0.7 for rank in range(len(_SURNAMES))]
_GIVEN_CHARS = {
    "M": "伟强磊军洋勇杰涛明超刚平辉鹏华飞鑫波斌宇浩凯健俊帆旭宁龙国建志文东海",
    "F": "芳娜敏静丽艳娟霞秀英玲燕萍红梅琳雪婷倩颖慧欣佳蕾怡丹璐琴云月",
}
_MOBILE_PREFIXES = (
    "130", "131", "132", "133", "134", "135", "136", "137", "138", "139", "150", "151", "152",
    "153", "155", "156", "157", "158", "159", "170", "173", "176", "177", "178", "180", "181",
    "182", "183", "184", "185", "186", "187", "188", "189", "191", "198", "199",
)  # fmt: skip
_ROADS = (
    "人民路", "解放路", "中山路", "建设路", "和平路", "胜利街", "文化路", "新华街", "光明路",
    "朝阳路", "长江路", "黄河路", "幸福路", "友谊路", "东风路", "青年路", "滨江路", "花园街",
)  # fmt: skip
_PLAIN_NOTES = (
    "入院后完善相关检查，病情平稳。",
    "遵医嘱规律服药，门诊随访。",
    "患者自述近期乏力、食欲下降。",
    "已签署基因检测知情同意书，样本送检。",
    "出院时一般情况可，嘱定期复查。",
    "既往体健，否认药物过敏史。",
)
# Real notes leak identifiers; about one note in five uses one of these.
_IDENTIFYING_NOTES = (
    "家属{relative}（{relation}）陪同，联系电话{mobile}。",
    "患者手机{mobile}，检测报告出具后请电话通知。",
    "由{relation}{relative}代签知情同意书。",
)
_RELATIONS = ("配偶", "儿子", "女儿", "父亲", "母亲")
#: Codes that only occur in one sex, so diagnoses never contradict ``sex``.
_SEX_SPECIFIC_CODES = {"N97.9": "F", "O03.9": "F", "C53.9": "F", "C50.9": "F", "C61": "M",
                       "N46": "M", "G71.0": "M"}  # fmt: skip
#: A cohort of at least this many subjects always has someone over 89, an HIV or syphilis code
#: and a psychiatric code, so the rarest rules are exercised even by the smallest demo.
_GUARANTEE_MIN_SUBJECTS = 10
_HIV_SYPHILIS_CODES = ("B20", "A53.9")
_FIRST_ADMISSION = date(2019, 1, 1)
_ADMISSION_SPAN_DAYS = 2000


@dataclass(frozen=True)
class CohortSummary:
    """What ``generate_cohort`` wrote: files are relative to ``out_dir``."""

    out_dir: Path
    subjects: int
    files: list[str]
    total_bytes: int


@dataclass(frozen=True)
class _Reference:
    """The synthetic reference tables of ``data_catalog/reference``."""

    regions: list[dict[str, str]]
    employers: list[str]
    icd10: list[dict[str, str]]


@dataclass(frozen=True)
class _Reads:
    """Reads as FASTQ-ready byte strings; index i of each list is one read."""

    sequences: list[bytes]
    qualities: list[bytes]


def generate_cohort(
    out_dir: Path,
    *,
    subjects: int = 20,
    seed: int = 7,
    reads_per_subject: int = 200,
    variants_per_subject: int = 60,
    withdrawn_share: float = 0.1,
    fastq_bytes: int | None = None,
    reference_dir: Path | None = None,
    progress: Progress | None = None,
) -> CohortSummary:
    """Write a cohort under ``out_dir`` and return what was written.

    ``fastq_bytes`` grows the first subject's FASTQ.gz to at least that many bytes, in constant
    memory, for benchmarks; every other file stays small.
    """
    _check_arguments(subjects, reads_per_subject, variants_per_subject, withdrawn_share)
    out_dir = Path(out_dir)
    (out_dir / "seq").mkdir(parents=True, exist_ok=True)
    reference = _load_reference(reference_dir or DEFAULT_REFERENCE_DIR)
    rng = random.Random(seed)
    clinical = _clinical_rows(rng, reference, subjects)
    consents = _consent_rows(rng, clinical, withdrawn_share)
    samples = _sample_rows(rng, clinical)
    files = _write_tables(out_dir, clinical, consents, samples)
    for index, (subject, sample) in enumerate(zip(clinical, samples)):
        subject_rng = np.random.default_rng([seed, index])
        grow_to = fastq_bytes if index == 0 else None
        files += _write_sequencing(
            out_dir, subject, sample, subject_rng,
            reads_per_subject, variants_per_subject, grow_to, progress,
        )  # fmt: skip
    total = sum((out_dir / name).stat().st_size for name in files)
    return CohortSummary(out_dir=out_dir, subjects=subjects, files=files, total_bytes=total)


def _check_arguments(subjects: int, reads: int, variants: int, withdrawn_share: float) -> None:
    """Refuse sizes that cannot make a cohort before any file is written."""
    if subjects < 1 or reads < 0 or variants < 0 or not 0.0 <= withdrawn_share <= 1.0:
        raise ConfigurationError(
            "synthetic cohort needs subjects >= 1, reads and variants >= 0 and a withdrawn "
            "share between 0 and 1",
            subjects=subjects, reads=reads, variants=variants, withdrawn_share=withdrawn_share,
        )  # fmt: skip


# --- reference tables -----------------------------------------------------------------------


def _read_csv(path: Path) -> list[dict[str, str]]:
    """Rows of a UTF-8 reference CSV as dicts."""
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def _load_reference(reference_dir: Path) -> _Reference:
    """Load regions, employers and ICD-10 codes; row order of icd10.csv is frequency rank."""
    employers = [row["employer"] for row in _read_csv(reference_dir / "employers.csv")]
    return _Reference(
        regions=_read_csv(reference_dir / "regions.csv"),
        employers=employers,
        icd10=_read_csv(reference_dir / "icd10.csv"),
    )


# --- clinical table -------------------------------------------------------------------------


def _clinical_rows(rng: random.Random, ref: _Reference, count: int) -> list[Row]:
    """One row per subject; cohort-wide guarantees are drawn first, then each subject."""
    mrns = [f"MR{number:08d}" for number in rng.sample(range(10**8), count)]
    ages = _ages(rng, count)
    codes = _diagnoses(rng, ref, count)
    identifying = set(rng.sample(range(count), max(1, round(count / 5))))
    doctors = [_name(rng, rng.choice("MF")) for _ in range(max(3, min(40, count // 8)))]
    used: set[str] = set()
    return [
        _subject(rng, ref, used, mrn, age, code, index in identifying, rng.choice(doctors))
        for index, (mrn, age, code) in enumerate(zip(mrns, ages, codes))
    ]


def _ages(rng: random.Random, count: int) -> list[int]:
    """Ages 0-95, always including someone over 89 (the never-split '>89' band, Table 6)."""
    ages = [rng.randrange(96) for _ in range(count)]
    if count >= _GUARANTEE_MIN_SUBJECTS and max(ages) < 90:
        ages[rng.randrange(count)] = rng.randint(90, 95)
    return ages


def _diagnoses(rng: random.Random, ref: _Reference, count: int) -> list[str]:
    """Zipf-like codes (common ones dominate, a long tail of rare and special diseases).

    Cohorts of 10 or more always contain an HIV/syphilis and a psychiatric code, so grade-5
    special-disease handling (GB/T 39725 §11.1.2.3) is exercised even by the smallest demo.
    """
    groups = {row["code"]: row["special_group"] for row in ref.icd10}
    weights = [1 / (rank + 1) ** 0.8 for rank in range(len(groups))]
    codes = rng.choices(list(groups), weights=weights, k=count)
    if count >= _GUARANTEE_MIN_SUBJECTS:
        free = [i for i, code in enumerate(codes) if not groups[code]]
        required = (
            [code for code in _HIV_SYPHILIS_CODES if code in groups],
            [code for code, group in groups.items() if group == "psychiatric"],
        )
        for choices in required:
            if choices and free and not set(choices) & set(codes):
                codes[free.pop(rng.randrange(len(free)))] = rng.choice(choices)
    return codes


def _subject(
    rng: random.Random,
    ref: _Reference,
    used: set[str],
    mrn: str,
    age: int,
    code: str,
    identifying_note: bool,
    doctor: str,
) -> Row:
    """One subject's clinical row, internally consistent (ID vs birth date, sex, county)."""
    sex = _SEX_SPECIFIC_CODES.get(code) or rng.choice("MF")
    name, surname_pinyin = _name_with_pinyin(rng, sex)
    admission = _FIRST_ADMISSION + timedelta(days=rng.randrange(_ADMISSION_SPAN_DAYS))
    birth = _years_before(admission, age) - timedelta(days=rng.randrange(365))
    stay = rng.randint(1, 60)
    region = rng.choices(ref.regions, weights=[int(r["population"]) for r in ref.regions])[0]
    mobile = _unique(used, lambda: rng.choice(_MOBILE_PREFIXES) + f"{rng.randrange(10**8):08d}")
    return {
        "mrn": mrn,
        "name": name,
        "id_number": _unique(used, lambda: _resident_id(rng, region["admin_code"], birth, sex)),
        "sex": sex,
        "birth_date": birth,
        "mobile": mobile,
        "email": _unique(used, lambda: _email(rng, surname_pinyin, birth, mobile)),
        "province": region["province"],
        "city": region["city"],
        "county": region["county"],
        "street": _street(rng),
        "postcode": region["postcode"],
        "employer": _employer(rng, ref, age),
        "insurance_no": f"YB{rng.randrange(10**12):012d}",
        "attending_doctor": doctor,
        "admission_date": admission,
        "discharge_date": admission + timedelta(days=stay),
        "sequencing_date": admission + timedelta(days=rng.randint(0, stay + 30)),
        "diagnosis_icd10": code,
        **_labs(rng, sex),
        "note": _note(rng, mobile) if identifying_note else rng.choice(_PLAIN_NOTES),
    }


def _years_before(day: date, years: int) -> date:
    """The same calendar day ``years`` earlier (29 February becomes the 28th)."""
    try:
        return day.replace(year=day.year - years)
    except ValueError:
        return day.replace(year=day.year - years, day=28)


def _unique(used: set[str], draw: Callable[[], str]) -> str:
    """Redraw until the value is new: real IDs, phones and mailboxes belong to one person."""
    value = draw()
    while value in used:
        value = draw()
    used.add(value)
    return value


def _name_with_pinyin(rng: random.Random, sex: str) -> tuple[str, str]:
    """A 2-3 character name (frequent surnames more likely) and the surname's pinyin."""
    surname, pinyin = rng.choices(_SURNAMES, weights=_SURNAME_WEIGHTS)[0]
    given_length = 1 if len(surname) == 2 else rng.choice((1, 2, 2))
    given = "".join(rng.choice(_GIVEN_CHARS[sex]) for _ in range(given_length))
    return surname + given, pinyin


def _name(rng: random.Random, sex: str) -> str:
    """A Chinese personal name (doctors, relatives)."""
    return _name_with_pinyin(rng, sex)[0]


def _resident_id(rng: random.Random, admin_code: str, birth: date, sex: str) -> str:
    """GB 11643 ID: county code, birth date, sequence (odd = male), check character."""
    sequence = rng.randrange(500) * 2 + (1 if sex == "M" else 0)
    body = f"{admin_code}{birth:%Y%m%d}{sequence:03d}"
    return body + resident_id_check_digit(body)


def _email(rng: random.Random, pinyin: str, birth: date, mobile: str) -> str:
    """Mailboxes as Chinese patients have them: pinyin+digits, QQ numbers, phone@139."""
    style = rng.randrange(3)
    if style == 0:
        return f"{pinyin}{birth:%y}{rng.randrange(100, 1000)}@{rng.choice(('163.com', '126.com'))}"
    if style == 1:
        return f"{rng.randrange(10**5, 10**10)}@qq.com"
    return f"{mobile}@139.com"


def _street(rng: random.Random) -> str:
    """Road, house number and sometimes building/unit/room, which §10.2 c 1 says to delete."""
    address = f"{rng.choice(_ROADS)}{rng.randint(1, 399)}号"
    if rng.random() < 0.6:
        room = f"{rng.randint(1, 28)}0{rng.randint(1, 6)}"
        address += f"{rng.randint(1, 30)}栋{rng.randint(1, 6)}单元{room}室"
    return address


def _employer(rng: random.Random, ref: _Reference, age: int) -> str:
    """Working-age subjects mostly have an employer; children and the very old do not."""
    if not 18 <= age <= 70 or rng.random() < 0.2:
        return ""
    return rng.choice(ref.employers)


def _labs(rng: random.Random, sex: str) -> dict[str, float]:
    """Plausible haemoglobin, white-cell count and ALT values."""
    return {
        "lab_hemoglobin_g_l": round(max(40.0, rng.gauss(140 if sex == "M" else 125, 15)), 1),
        "lab_wbc_10e9_l": round(rng.lognormvariate(1.87, 0.3), 2),
        "lab_alt_u_l": round(rng.lognormvariate(3.1, 0.5), 1),
    }


def _note(rng: random.Random, mobile: str) -> str:
    """A free-text note that leaks the patient's mobile number or a relative's name."""
    template = rng.choice(_IDENTIFYING_NOTES)
    relative = _name(rng, rng.choice("MF"))
    return template.format(relative=relative, relation=rng.choice(_RELATIONS), mobile=mobile)


# --- consents and samples -------------------------------------------------------------------


def _consent_rows(rng: random.Random, clinical: Sequence[Row], withdrawn_share: float) -> list[Row]:
    """Research or broad consent signed during the stay; some subjects later withdraw."""
    count = len(clinical)
    withdrawn = round(count * withdrawn_share)
    if count >= 5 and withdrawn_share > 0:
        withdrawn = max(1, withdrawn)
    withdrawing = set(rng.sample(range(count), withdrawn))
    rows = []
    for index, subject in enumerate(clinical):
        admission, discharge = subject["admission_date"], subject["discharge_date"]
        signed = admission + timedelta(days=rng.randint(0, (discharge - admission).days))
        withdrawn_on = None
        if index in withdrawing:
            withdrawn_on = signed + timedelta(days=rng.randint(30, 720))
        rows.append({"mrn": subject["mrn"], "scope": rng.choice(("research", "broad")),
                     "signed_on": signed, "withdrawn_on": withdrawn_on})  # fmt: skip
    return rows


def _sample_rows(rng: random.Random, clinical: Sequence[Row]) -> list[Row]:
    """Sample IDs drawn independently of MRNs, so only samples.csv links the two (SEQ §5)."""
    numbers = rng.sample(range(10**6), len(clinical))
    rows = []
    for number, subject in zip(numbers, clinical):
        sample_id = f"SMP{number:06d}"
        rows.append({
            "sample_id": sample_id, "mrn": subject["mrn"], "assay": rng.choice(("WGS", "WES")),
            "fastq": f"seq/{sample_id}.R1.fastq.gz", "bam": f"seq/{sample_id}.bam",
            "vcf": f"seq/{sample_id}.vcf.gz",
        })  # fmt: skip
    return rows


# --- table files ----------------------------------------------------------------------------


def _write_tables(
    out_dir: Path,
    clinical: Sequence[Row],
    consents: Sequence[Row],
    samples: Sequence[Row],
) -> list[str]:
    """Write the CSV tables and the Parquet copy of the clinical table."""
    _write_csv(out_dir / "clinical.csv", CLINICAL_COLUMNS, clinical)
    _write_clinical_parquet(out_dir / "clinical.parquet", clinical)
    _write_csv(out_dir / "consents.csv", CONSENT_COLUMNS, consents)
    _write_csv(out_dir / "samples.csv", SAMPLE_COLUMNS, samples)
    return ["clinical.csv", "clinical.parquet", "consents.csv", "samples.csv"]


def _csv_text(value: object) -> str:
    """ISO dates, shortest round-trip floats, empty for missing values."""
    if value is None:
        return ""
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def _write_csv(path: Path, columns: Sequence[str], rows: Iterable[Row]) -> None:
    """UTF-8 CSV with '\\n' line ends, so bytes do not depend on the platform."""
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([_csv_text(row[column]) for column in columns] for row in rows)


def _write_clinical_parquet(path: Path, clinical: Sequence[Row]) -> None:
    """Same rows as clinical.csv, typed: date32 dates, float64 labs, strings elsewhere."""
    fields = [
        pa.field(column, pa.date32() if column in DATE_COLUMNS
                 else pa.float64() if column in LAB_COLUMNS else pa.string())
        for column in CLINICAL_COLUMNS
    ]  # fmt: skip
    schema = pa.schema(fields)
    arrays = [
        pa.array([row[field.name] for row in clinical], type=field.type) for field in schema
    ]
    pq.write_table(pa.Table.from_arrays(arrays, schema=schema), path)


# --- sequencing files -----------------------------------------------------------------------


def _write_sequencing(
    out_dir: Path,
    subject: Row,
    sample: Row,
    rng: np.random.Generator,
    read_count: int,
    variant_count: int,
    fastq_bytes: int | None,
    progress: Progress | None,
) -> list[str]:
    """FASTQ, BAM (same reads, aligned) and VCF with index for one subject."""
    sample_id, name = str(sample["sample_id"]), str(subject["name"])
    read_prefix = f"{sample_id}:RUN{rng.integers(1000, 10000)}:"
    reads = _random_reads(rng, read_count)
    _write_fastq(
        out_dir / str(sample["fastq"]), read_prefix, reads, rng, fastq_bytes, progress
    )
    _write_bam(out_dir / str(sample["bam"]), sample_id, str(sample["mrn"]), name, read_prefix,
               reads, rng)  # fmt: skip
    vcf = str(sample["vcf"])
    _write_vcf(out_dir / vcf, sample_id, str(sample["mrn"]), name, subject, rng, variant_count)
    return [str(sample["fastq"]), str(sample["bam"]), vcf, vcf + ".tbi"]


def _random_reads(rng: np.random.Generator, count: int) -> _Reads:
    """Random 150 bp reads with rare Ns and Illumina-like qualities that fall off at 3' ends."""
    bases = np.frombuffer(b"ACGT", dtype=np.uint8)[rng.integers(0, 4, (count, READ_LENGTH))]
    bases[rng.random((count, READ_LENGTH)) < 0.002] = ord("N")
    mean_quality = 37 - 8 * np.linspace(0, 1, READ_LENGTH) ** 2
    phred = np.clip(rng.normal(mean_quality, 3, (count, READ_LENGTH)), 2, 41).astype(np.uint8)
    phred[bases == ord("N")] = 2
    qualities = phred + 33
    return _Reads(
        sequences=[row.tobytes() for row in bases],
        qualities=[row.tobytes() for row in qualities],
    )


def _fastq_records(prefix: bytes, first: int, reads: _Reads) -> bytes:
    """FASTQ records for ``reads``, named prefix + running number from ``first``."""
    return b"".join(
        b"@%s%d\n%s\n+\n%s\n" % (prefix, first + offset, sequence, quality)
        for offset, (sequence, quality) in enumerate(zip(reads.sequences, reads.qualities))
    )


def _write_fastq(
    path: Path,
    read_prefix: str,
    reads: _Reads,
    rng: np.random.Generator,
    grow_to: int | None,
    progress: Progress | None,
) -> None:
    """Write the reads gzipped (mtime 0, no file name, so bytes are reproducible).

    With ``grow_to``, append blocks from a fixed pool of reads (fresh names each time) until the
    compressed file reaches that size; memory stays constant whatever the size.
    """
    prefix = read_prefix.encode()
    with path.open("wb") as raw, gzip.GzipFile(
        filename="", mode="wb", fileobj=raw, compresslevel=FASTQ_COMPRESSLEVEL, mtime=0
    ) as fastq:
        fastq.write(_fastq_records(prefix, 1, reads))
        if grow_to is None:
            return
        pool, written = _random_reads(rng, GROWTH_POOL_READS), len(reads.sequences)
        while raw.tell() < grow_to:
            fastq.write(_fastq_records(prefix, written + 1, pool))
            written += GROWTH_POOL_READS
            if progress:
                progress("fastq", raw.tell())


def _sam_header(sample_id: str, mrn: str, name: str) -> Row:
    """A bwa-style header that leaks the MRN (RG SM) and the patient's name (PG CL, CO)."""
    fastq_path = f"/data/{name}/{sample_id}.R1.fastq.gz"
    read_group = f"@RG\\tID:{sample_id}\\tSM:{mrn}\\tLB:lib1\\tPL:ILLUMINA"
    return {
        "HD": {"VN": "1.6", "SO": "coordinate"},
        "SQ": [{"SN": contig, "LN": length} for contig, length in CONTIGS],
        "RG": [{"ID": sample_id, "SM": mrn, "LB": "lib1", "PL": "ILLUMINA"}],
        "PG": [{"ID": "bwa", "PN": "bwa", "VN": "0.7.17-r1188",
                "CL": f"bwa mem -R {read_group} /ref/GRCh38.fa {fastq_path}"}],  # fmt: skip
        "CO": [f"patient: {name}"],
    }


def _random_loci(rng: np.random.Generator, count: int, margin: int) -> list[tuple[int, int]]:
    """Distinct sorted (contig index, 0-based position) pairs, contigs weighted by length."""
    lengths = np.array([length for _, length in CONTIGS], dtype=np.int64)
    loci: set[tuple[int, int]] = set()
    while len(loci) < count:
        missing = count - len(loci)
        contigs = rng.choice(len(CONTIGS), size=missing, p=lengths / lengths.sum())
        starts = (rng.random(missing) * (lengths[contigs] - margin)).astype(np.int64)
        loci.update(zip(contigs.tolist(), starts.tolist()))
    return sorted(loci)


_COMPLEMENT = bytes.maketrans(b"ACGTN", b"TGCAN")


def _write_bam(
    path: Path,
    sample_id: str,
    mrn: str,
    name: str,
    read_prefix: str,
    reads: _Reads,
    rng: np.random.Generator,
) -> None:
    """Coordinate-sorted single-end alignments of the FASTQ reads (reverse strand stored
    reverse-complemented, as aligners do)."""
    header = pysam.AlignmentHeader.from_dict(_sam_header(sample_id, mrn, name))
    count = len(reads.sequences)
    loci = _random_loci(rng, count, READ_LENGTH)
    order = rng.permutation(count).tolist()
    reverse = (rng.random(count) < 0.5).tolist()
    with pysam.AlignmentFile(str(path), "wb", header=header) as bam:
        for (contig, start), read, is_reverse in zip(loci, order, reverse):
            sequence, quality = reads.sequences[read], reads.qualities[read]
            if is_reverse:
                sequence, quality = sequence.translate(_COMPLEMENT)[::-1], quality[::-1]
            segment = pysam.AlignedSegment(header)
            segment.query_name = f"{read_prefix}{read + 1}"
            segment.flag = 16 if is_reverse else 0
            segment.reference_id, segment.reference_start = contig, start
            segment.mapping_quality = 60
            segment.cigartuples = [(0, READ_LENGTH)]
            segment.query_sequence = sequence.decode()
            segment.query_qualities = pysam.qualitystring_to_array(quality.decode())
            segment.set_tag("RG", sample_id)
            bam.write(segment)


def _vcf_header(sample_id: str, mrn: str, name: str, file_date: date) -> pysam.VariantHeader:
    """VCF 4.2 header whose sample column is the MRN and whose meta lines name the patient."""
    header = pysam.VariantHeader()
    for line in (f"##fileDate={file_date:%Y%m%d}", "##source=seqlife-synth",
                 "##reference=GRCh38", f"##patient_name={name}",
                 f"##bam_path=/data/{name}/{sample_id}.bam"):  # fmt: skip
        header.add_line(line)
    for contig, length in CONTIGS:
        header.contigs.add(contig, length=length)
    header.info.add("DP", 1, "Integer", "Total read depth")
    header.info.add("AF", "A", "Float", "Allele frequency")
    header.formats.add("GT", 1, "String", "Genotype")
    header.formats.add("DP", 1, "Integer", "Read depth")
    header.formats.add("GQ", 1, "Integer", "Genotype quality")
    header.add_sample(mrn)
    return header


def _alleles(rng: np.random.Generator) -> tuple[str, str]:
    """Mostly SNVs, some short deletions and insertions; ALT always differs from REF."""
    ref = "ACGT"[rng.integers(4)]
    kind = rng.random()
    extra = "".join("ACGT"[i] for i in rng.integers(0, 4, rng.integers(1, 4)))
    if kind < 0.85:
        return ref, "ACGT".replace(ref, "")[rng.integers(3)]
    if kind < 0.95:
        return ref + extra, ref
    return ref, ref + extra


_GENOTYPES = ((0, 1), (1, 1), (0, 0))


def _write_vcf(
    path: Path,
    sample_id: str,
    mrn: str,
    name: str,
    subject: Row,
    rng: np.random.Generator,
    count: int,
) -> None:
    """BGZF VCF with sorted single-sample records, then its tabix index."""
    header = _vcf_header(sample_id, mrn, name, subject["sequencing_date"])
    with pysam.VariantFile(str(path), "wz", header=header) as vcf:
        for contig, start in _random_loci(rng, count, 10):
            ref, alt = _alleles(rng)
            genotype = _GENOTYPES[rng.choice(3, p=(0.6, 0.3, 0.1))]
            depth = int(rng.integers(10, 80))
            quality = round(float(rng.uniform(30, 3000)), 1)
            record = vcf.new_record(contig=CONTIGS[contig][0], start=start, alleles=(ref, alt),
                                    qual=quality, filter="PASS")  # fmt: skip
            if rng.random() < 0.3:
                record.id = f"rs{rng.integers(10**6, 10**9)}"
            record.info["DP"] = depth
            record.info["AF"] = (round(sum(genotype) / 2 * float(rng.uniform(0.8, 1.0)), 3),)
            record.samples[mrn]["GT"] = genotype
            record.samples[mrn]["DP"] = depth
            record.samples[mrn]["GQ"] = int(rng.integers(20, 100))
            vcf.write(record)
    pysam.tabix_index(str(path), preset="vcf", force=True)
