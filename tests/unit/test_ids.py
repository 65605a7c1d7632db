"""Resident ID numbers (GB 11643): check character, birth date and sex."""

from __future__ import annotations

from datetime import date

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seqlife.ids import (
    birth_date_from_resident_id,
    is_valid_resident_id,
    resident_id_check_digit,
    sex_from_resident_id,
)

KNOWN_VALID = "11010519491231002X"  # the GB 11643 example: Beijing Chaoyang, 1949-12-31, female


def test_known_id_is_valid_and_decodes():
    assert resident_id_check_digit(KNOWN_VALID[:17]) == "X"
    assert is_valid_resident_id(KNOWN_VALID)
    assert birth_date_from_resident_id(KNOWN_VALID) == date(1949, 12, 31)
    assert sex_from_resident_id(KNOWN_VALID) == "F"


def test_lowercase_x_check_character_is_accepted():
    assert is_valid_resident_id(KNOWN_VALID.lower())


@pytest.mark.parametrize(
    "value",
    [
        "11010519491231002",  # 17 characters
        "110105194912310021X",  # 19 characters
        "11010519491231002Y",  # check character not 0-9/X
        "1101051949123100AX",  # letter in the body
        "110105194913310028",  # month 13 (check character computed for the body)
        "110105190002290022",  # 1900 was not a leap year
        "110105194912310021",  # wrong check character
        "１１０１０５１９４９１２３１００２X",  # full-width digits
    ],
)
def test_when_id_is_malformed_then_it_is_invalid(value):
    assert not is_valid_resident_id(value)


def test_when_id_is_invalid_then_decoding_refuses_it():
    with pytest.raises(ValueError):
        birth_date_from_resident_id("110105194912310021")
    with pytest.raises(ValueError):
        sex_from_resident_id("110105194912310021")


bodies = st.builds(
    lambda area, born, sequence: f"{area:06d}{born:%Y%m%d}{sequence:03d}",
    st.integers(110000, 829999),
    st.dates(min_value=date(1900, 1, 1), max_value=date(2099, 12, 31)),
    st.integers(0, 999),
)


@settings(database=None)
@given(body=bodies)
def test_any_body_with_computed_check_character_validates(body):
    value = body + resident_id_check_digit(body)
    assert is_valid_resident_id(value)
    assert birth_date_from_resident_id(value) == date(
        int(body[6:10]), int(body[10:12]), int(body[12:14])
    )
    assert sex_from_resident_id(value) == ("M" if int(body[16]) % 2 else "F")


@settings(database=None)
@given(body=bodies, position=st.integers(0, 17), shift=st.integers(1, 9))
def test_when_one_character_changes_then_id_is_invalid(body, position, shift):
    """MOD 11-2 detects every single-character error, in the body or in the check character."""
    value = body + resident_id_check_digit(body)
    alphabet = "0123456789X" if position == 17 else "0123456789"
    changed = alphabet[(alphabet.index(value[position]) + shift) % len(alphabet)]
    assert not is_valid_resident_id(value[:position] + changed + value[position + 1 :])
