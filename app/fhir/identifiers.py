"""UK patient identifiers: NHS number and CHI number check digits (DOMAIN.md, "Identifiers")."""

from __future__ import annotations

from datetime import date

NHS_NUMBER_SYSTEM = "https://fhir.nhs.uk/Id/nhs-number"
ODS_ORGANIZATION_SYSTEM = "https://fhir.nhs.uk/Id/ods-organization-code"

_WEIGHTS = (10, 9, 8, 7, 6, 5, 4, 3, 2)


def _modulus_11_check_digit(digits: str) -> int | None:
    """The modulus-11 check digit of nine digits, or None when no valid digit exists."""
    remainder = sum(int(d) * w for d, w in zip(digits, _WEIGHTS, strict=True)) % 11
    check = 11 - remainder
    if check == 11:
        return 0
    if check == 10:
        return None
    return check


def _luhn_valid(digits: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2 == 1:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def nhs_number_problem(value: str) -> str | None:
    """Why ``value`` is not a valid NHS number, or None if it is."""
    if len(value) != 10 or not value.isascii() or not value.isdigit():
        return "an NHS number is exactly 10 digits, without spaces"
    if _modulus_11_check_digit(value[:9]) != int(value[9]):
        return "the NHS number's check digit is wrong (modulus 11)"
    return None


def _is_real_ddmmyy(ddmmyy: str) -> bool:
    day, month, year = int(ddmmyy[:2]), int(ddmmyy[2:4]), int(ddmmyy[4:6])
    # The century is not encoded; a date that exists in either century is accepted
    # (29 February 2000 exists, 29 February 1900 does not).
    for century in (1900, 2000):
        try:
            date(century + year, month, day)
        except ValueError:
            continue
        return True
    return False


def chi_number_problem(value: str) -> str | None:
    """Why ``value`` is not a valid CHI number, or None if it is.

    The first six digits are the date of birth (DDMMYY). The check digit is modulus 11 for
    most numbers; Scotland also issues modulus-10 (Luhn) check digits where modulus-11 numbers
    run out for a birth date, so either is accepted.
    """
    if len(value) != 10 or not value.isascii() or not value.isdigit():
        return "a CHI number is exactly 10 digits, without spaces"
    if not _is_real_ddmmyy(value[:6]):
        return "a CHI number starts with a real date of birth (DDMMYY)"
    if _modulus_11_check_digit(value[:9]) == int(value[9]) or _luhn_valid(value):
        return None
    return "the CHI number's check digit is wrong (neither modulus 11 nor modulus 10)"
