"""Recipient watermarks on delivered tables, so a leaked copy names its agreement (RARE §4.11).

**Mark.** Every de-identified table delivered under an agreement carries a fingerprint keyed by a
secret and the agreement id (``mark_id``). For each row with a subject value and each marked column
(a float column of measurements, see :func:`marked_columns`) one bit is derived::

    b = HMAC-SHA256(key, frame("watermark") + frame(mark_id) + frame(column)
                         + frame(subject))[-1] & 1

where ``frame(s)`` is the UTF-8 bytes of ``s`` after their 4-byte big-endian length (so no choice of
ids can make two different triples collide). The value is rounded to ``decimals`` places and, when
the parity of its last kept digit differs from ``b``, moved one unit of that place toward the
original value (ties up). A value therefore moves by at most ``10**-decimals``: one unit of the
precision the data are released at, and the mark shows in no column statistic beyond that.

**Why it survives a leak.** Each bit depends only on the subject, the column name and the agreement,
never on row position or on the other columns, so shuffled rows, dropped columns and partial
extracts still carry it: every remaining marked cell agrees with the true agreement, while another
agreement's bits agree with a cell only by chance (one half).

**Trace.** :func:`detect` counts, per candidate, the marked cells whose observed parity equals the
candidate's bit and turns the count into a one-sided exact binomial test against chance. Rows that
repeat a subject carry the same bit, so each (subject, column) counts once, by majority of its
cells; counting repeats separately would overstate the evidence.

**Limits.** The mark does not survive rounding to fewer decimals, added noise, aggregation,
re-pseudonymised subject IDs or renamed marked columns (pass the original names via ``columns`` if
the renaming is known). Recipients who pool their copies can see which cells differ; the mark makes
a leak attributable, it does not make copying impossible.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from seqlife.exceptions import SeqlifeError

#: Beyond this magnitude a float has no unit of the last place left to carry a bit.
_MAX_SCALED = 2.0 ** 52


class WatermarkError(SeqlifeError):
    """A table could not be watermarked or traced; nothing was delivered."""

    stage = "share"


@dataclass(frozen=True)
class Match:
    """How well a leaked table agrees with one candidate agreement's watermark."""

    mark_id: str        # the candidate mark (an agreement id)
    agreeing: int       # marked cells whose observed bit equals the candidate's expected bit
    compared: int       # marked cells compared (one per subject and column)
    confidence: float   # 1 - p-value of a one-sided binomial test vs 0.5 (chance); in [0, 1]


def marked_columns(df: pd.DataFrame, subject_column: str,
                   exclude: Iterable[str] = ()) -> list[str]:
    """Numeric (float) columns that can carry the mark: not the subject column, not in exclude, not
    integer/bool/date/categorical codes.

    A float column whose values are all whole numbers is taken for codes (an integer column that
    gained a missing value, 1.0/2.0 categories): a fractional nudge would corrupt it.
    """
    skip = {subject_column, *exclude}
    usable = []
    for name in df.columns:
        if name in skip or not pd.api.types.is_float_dtype(df[name].dtype):
            continue
        values = _floats(df[name])
        values = values[np.isfinite(values)]
        if values.size and not np.array_equal(values, np.round(values)):
            usable.append(name)
    return usable


def embed(df: pd.DataFrame, *, key: bytes, mark_id: str, subject_column: str,
          columns: Sequence[str] | None = None, decimals: int = 1) -> pd.DataFrame:
    """A copy of df carrying the mark of ``mark_id`` in ``columns`` (default:
    :func:`marked_columns`), so a leak of it can be traced to this agreement.

    Marked columns are rounded to ``decimals`` places (rows without a subject value too, so the
    whole column is released at one precision); each value moves by at most ``10**-decimals``.
    Missing values stay missing; rows, row order, other columns and dtypes are unchanged.
    """
    _check(df, key, subject_column, decimals)
    targets = _columns_to_mark(df, subject_column, columns)
    codes, subjects = _subjects(df[subject_column])
    has_subject = codes >= 0
    scale = 10.0 ** decimals
    out = df.copy(deep=False)  # copy-on-write: df itself is never modified
    for name in targets:
        values = _floats(df[name])
        scaled, fits = _scaled(values, scale)
        digits = np.rint(scaled)
        wanted = np.zeros(len(df), dtype=bool)
        wanted[has_subject] = _bits(key, mark_id, name, subjects)[codes[has_subject]]
        wrong = fits & has_subject & ((np.mod(digits, 2) == 1) != wanted)
        digits[wrong] += np.where(scaled[wrong] >= digits[wrong], 1.0, -1.0)
        marked = np.where(fits, digits / scale, values)
        out[name] = pd.Series(marked, index=df.index, name=name).astype(df[name].dtype)
    return out


def detect(df: pd.DataFrame, *, key: bytes, candidates: Sequence[str], subject_column: str,
           columns: Sequence[str] | None = None, decimals: int = 1) -> list[Match]:
    """Score every candidate mark_id against a (possibly shuffled, subsetted, partial) table; best
    first. Uses only rows with a subject value and marked columns present in df.

    ``columns`` should be the columns marked at delivery (default: :func:`marked_columns` of df);
    ``key`` and ``decimals`` must be those used by :func:`embed`. Confidence is per candidate: among
    many wrong candidates one will reach about ``1 - 1/len(candidates)`` by chance, so a trace
    should require ``confidence > 1 - alpha/len(candidates)`` (Bonferroni).
    """
    _check(df, key, subject_column, decimals)
    if columns is None:
        present = marked_columns(df, subject_column)
    else:
        present = [c for c in dict.fromkeys(columns) if c in df.columns and c != subject_column]
    if not present:
        raise WatermarkError(
            "None of the watermarked columns is in the table, so it cannot be traced by its "
            "watermark (RARE §4.11). Name the columns marked at delivery (as recorded with the "
            "agreement), under the names they have in this table.")
    codes, subjects = _subjects(df[subject_column])
    scale = 10.0 ** decimals
    observed = []  # per column: subject indices decided by majority, and their parity bit
    for name in present:
        scaled, fits = _scaled(_floats(df[name]), scale)
        usable = (codes >= 0) & fits
        odd = np.mod(np.rint(scaled[usable]), 2) == 1
        total = np.bincount(codes[usable], minlength=len(subjects))
        ones = np.bincount(codes[usable], weights=odd, minlength=len(subjects))
        decided = np.flatnonzero(2 * ones != total)
        observed.append((name, decided, 2 * ones[decided] > total[decided]))
    compared = sum(len(decided) for _, decided, _ in observed)
    scored = []
    for mark_id in candidates:
        agreeing = sum(
            int(np.count_nonzero(_bits(key, mark_id, name, subjects[decided]) == bits))
            for name, decided, bits in observed)
        log_p = _log_binomial_tail(agreeing, compared)
        confidence = 0.0 - math.expm1(log_p)  # 0.0 - ...: no -0.0 when nothing agrees
        scored.append((log_p, mark_id, Match(mark_id, agreeing, compared, confidence)))
    return [match for _, _, match in sorted(scored, key=lambda s: (s[0], s[1]))]


def _check(df: pd.DataFrame, key: bytes, subject_column: str, decimals: int) -> None:
    if subject_column not in df.columns:
        raise WatermarkError(
            f"The subject column '{subject_column}' is not in the table. The watermark is keyed on "
            "each row's (pseudonymous) subject ID; name the column that holds it (RARE §4.11).")
    if not key:
        raise WatermarkError(
            "The watermark key is empty; an empty key would let anyone forge or strip the mark. "
            "Configure the share stage's watermark secret (RARE §4.11).")
    if decimals < 0:
        raise WatermarkError(
            f"decimals = {decimals}: the watermark is carried by a decimal digit, so decimals must "
            "be 0 or more.")


def _columns_to_mark(df: pd.DataFrame, subject_column: str,
                     columns: Sequence[str] | None) -> list[str]:
    """The requested columns, checked, or every column that can carry the mark."""
    if columns is None:
        targets = marked_columns(df, subject_column)
    else:
        targets = list(dict.fromkeys(columns))
        missing = [c for c in targets if c not in df.columns]
        if missing:
            raise WatermarkError(
                f"Column(s) {missing} named for the watermark are not in the table; nothing was "
                "marked.")
        unfit = [c for c in targets
                 if c == subject_column or not pd.api.types.is_float_dtype(df[c].dtype)]
        if unfit:
            raise WatermarkError(
                f"Column(s) {unfit} cannot carry the watermark: only float measurement columns "
                "other than the subject column can (integer, boolean, date and code columns "
                "would be corrupted). Nothing was marked.")
    if not targets:
        raise WatermarkError(
            "No column of the table can carry the watermark: it needs at least one float column "
            "with fractional values (lab values, measurements) besides the subject column "
            "(RARE §4.11). Deliver such a column, or trace this delivery by other means.")
    return targets


def _floats(column: pd.Series) -> np.ndarray:
    """Values as float64 with NaN for missing; text that is not a number (in a leak) is missing."""
    return pd.to_numeric(column, errors="coerce").to_numpy(dtype=float, na_value=np.nan)


def _scaled(values: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Values in units of the last kept decimal (0 where missing, infinite or too large to carry
    a bit) and where they can carry one."""
    with np.errstate(over="ignore", invalid="ignore"):
        scaled = values * scale
    fits = np.isfinite(scaled) & (np.abs(scaled) < _MAX_SCALED)
    return np.where(fits, scaled, 0.0), fits


def _subjects(column: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Row codes (-1 where the subject is missing) and the framed text of each distinct subject."""
    codes, uniques = pd.factorize(column)
    framed = np.empty(len(uniques), dtype=object)
    framed[:] = [_frame(_subject_text(value)) for value in uniques]
    return codes, framed


def _subject_text(value: object) -> str:
    """The text of a subject ID; 1001.0 reads as 1001, as an integer ID column read back with a
    missing value becomes float."""
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


def _frame(text: str) -> bytes:
    data = text.encode("utf-8")
    return len(data).to_bytes(4, "big") + data


def _bits(key: bytes, mark_id: str, column: str, framed_subjects: np.ndarray) -> np.ndarray:
    """The keyed bit of each subject for one mark and column."""
    prefix = _frame("watermark") + _frame(mark_id) + _frame(str(column))
    return np.fromiter((hmac.digest(key, prefix + s, hashlib.sha256)[-1] & 1
                        for s in framed_subjects), dtype=bool, count=len(framed_subjects))


def _log_binomial_tail(k: int, n: int) -> float:
    """log P(X >= k) for X ~ Binomial(n, 1/2), exact (terms summed in log space, no underflow)."""
    if k <= 0:
        return 0.0
    i = np.arange(k, n, dtype=float)
    log_terms = np.concatenate(([0.0], np.cumsum(np.log(n - i) - np.log(i + 1))))  # C(n,j)/C(n,k)
    top = float(log_terms.max())
    head = math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) - n * math.log(2)
    return min(0.0, head + top + math.log(float(np.exp(log_terms - top).sum())))
