"""Chinese resident identity numbers (GB 11643-1999).

An 18-character number is 6 digits of the registering county, 8 digits of birth date, a 3-digit
sequence (odd for men, even for women) and an ISO 7064 MOD 11-2 check character. ID numbers are
direct identifiers (GB/T 39725 §10.2 a); the synthetic cohort must produce valid ones so that
detection and de-identification are tested against realistic input.
"""

from __future__ import annotations

from datetime import date

_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CHECK_CHARS = "10X98765432"


def resident_id_check_digit(first17: str) -> str:
    """Return the MOD 11-2 check character ('0'-'9' or 'X') for the first 17 digits."""
    if len(first17) != 17 or not first17.isascii() or not first17.isdigit():
        raise ValueError("a resident ID body is exactly 17 ASCII digits")
    total = sum(int(digit) * weight for digit, weight in zip(first17, _WEIGHTS))
    return _CHECK_CHARS[total % 11]


def _birth_date(value: str) -> date | None:
    """Parse characters 7-14 as YYYYMMDD; None when they are not a calendar date."""
    try:
        return date(int(value[6:10]), int(value[10:12]), int(value[12:14]))
    except ValueError:
        return None


def is_valid_resident_id(value: str) -> bool:
    """True for an 18-character ID with a calendar birth date and a correct check character.

    A lowercase 'x' is accepted because hand-typed forms often carry one. The birth date is not
    compared with today, so the answer never depends on the clock.
    """
    if not isinstance(value, str) or len(value) != 18 or not value.isascii():
        return False
    body, check = value[:17], value[17].upper()
    if not body.isdigit() or _birth_date(value) is None:
        return False
    return resident_id_check_digit(body) == check


def is_valid_old_resident_id(value: str) -> bool:
    """True for a first-generation 15-digit ID (before 1999: area, YYMMDD born 19YY, sequence):
    still found in older hospital records; it has no check digit, so the date is the check."""
    if not isinstance(value, str) or len(value) != 15 or not value.isascii() or not value.isdigit():
        return False
    try:
        date(1900 + int(value[6:8]), int(value[8:10]), int(value[10:12]))
    except ValueError:
        return False
    return value[0] != "0"


def birth_date_from_resident_id(value: str) -> date:
    """Birth date encoded in a valid ID; it is a quasi-identifier (GB/T 39725 §10.2 b)."""
    birth = _birth_date(value) if is_valid_resident_id(value) else None
    if birth is None:
        raise ValueError("not a valid resident ID")
    return birth


def sex_from_resident_id(value: str) -> str:
    """'M' when the 17th digit is odd, 'F' when even (GB 11643 sequence code)."""
    if not is_valid_resident_id(value):
        raise ValueError("not a valid resident ID")
    return "M" if int(value[16]) % 2 else "F"
