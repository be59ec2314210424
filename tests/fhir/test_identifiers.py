from __future__ import annotations

import pytest

from app.fhir.identifiers import chi_number_problem, nhs_number_problem


@pytest.mark.parametrize("value", ["9434765919", "9912003888"])
def test_valid_nhs_numbers(value: str) -> None:
    assert nhs_number_problem(value) is None


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("9434765918", "check digit"),  # last digit changed
        ("943476591", "10 digits"),
        ("943 476 5919", "10 digits"),
        ("94347659\uff119", "10 digits"),  # a full-width digit one
        ("0000000060", "check digit"),  # the check digit would be 10: never issued
    ],
)
def test_invalid_nhs_numbers(value: str, problem: str) -> None:
    message = nhs_number_problem(value)
    assert message is not None
    assert problem in message


def test_chi_number_modulus_11() -> None:
    # 010180 (1 Jan 1980), serial 123: modulus 11 gives check digit 8.
    assert chi_number_problem("0101801238") is None


def test_chi_number_modulus_10() -> None:
    # Same birth date and serial: the Luhn (modulus 10) check digit is 1.
    assert chi_number_problem("0101801231") is None
    assert chi_number_problem("0101801234") is not None


@pytest.mark.parametrize(
    "value",
    ["3202801230", "2902011234", "0113801239"],  # 32 Feb, 29 Feb 1901/2001, month 13
)
def test_chi_number_needs_a_real_birth_date(value: str) -> None:
    message = chi_number_problem(value)
    assert message is not None
    assert "date of birth" in message


def test_chi_number_leap_day_2000_is_real() -> None:
    # 29/02/00 exists (2000 was a leap year); the check digit still has to be right.
    assert "date of birth" not in (chi_number_problem("2902001230") or "")
