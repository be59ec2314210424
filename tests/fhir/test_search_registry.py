from __future__ import annotations

import unicodedata

import pytest

from app.fhir.resources import SERVED, model_class
from app.fhir.search.index import index_rows, normalise
from app.fhir.search.registry import TYPES, parameters_for


@pytest.mark.parametrize("resource_type", sorted(SERVED))
def test_every_registered_path_names_a_real_element(resource_type: str) -> None:
    fields = {f.alias or name for name, f in model_class(resource_type).model_fields.items()}
    for param in parameters_for(resource_type).values():
        assert param.type in TYPES, param
        for path in param.paths:
            assert path[0] in fields, (resource_type, param.code, path)


def test_issue_parameters_are_registered() -> None:
    wanted = {
        "ServiceRequest": {"requester", "performer", "based-on", "patient", "status", "code"},
        "Task": {"focus", "owner", "requester", "business-status", "modified", "patient"},
        "Patient": {"identifier", "family", "given", "birthdate", "general-practitioner"},
        "HealthcareService": {"type", "organization", "active"},
        "Observation": {"code", "date", "patient", "category"},
        "Communication": {"recipient", "sender", "received"},
        "CarePlan": {"status", "category"},
    }
    for resource_type, codes in wanted.items():
        assert codes <= set(parameters_for(resource_type)), resource_type


def test_index_rows_of_a_referral() -> None:
    referral = {
        "resourceType": "ServiceRequest",
        "status": "active",
        "intent": "order",
        "subject": {"reference": "Patient/p1"},
        "requester": {"reference": "http://base/PractitionerRole/r1"},
        "performer": [{"reference": "https://elsewhere.example/HealthcareService/9"}],
        "category": [
            {
                "coding": [
                    {
                        "system": "http://snomed.info/sct",
                        "code": "3457005",
                        "display": "Patient referral",
                    }
                ]
            }
        ],
        "authoredOn": "2026-03-04",
    }
    rows = index_rows("ServiceRequest", referral, "http://base")
    assert ("patient", "Patient", "p1") in rows.references
    assert ("subject", "Patient", "p1") in rows.references
    assert ("requester", "PractitionerRole", "r1") in rows.references
    assert ("performer", "", "https://elsewhere.example/HealthcareService/9") in rows.references
    assert ("category", "http://snomed.info/sct", "3457005", "3457005") in rows.tokens
    assert ("status", "", "active", "active") in rows.tokens
    folded = "patient referral"
    assert ("category:text", folded, "Patient referral", folded) in rows.strings
    [(param, low, high)] = rows.dates
    assert param == "authored"
    assert (low.isoformat(), high.isoformat()) == (
        "2026-03-04T00:00:00+00:00",
        "2026-03-05T00:00:00+00:00",
    )


def test_normalise_folds_case_and_accents() -> None:
    assert normalise("Ève  ") == "eve"
    assert normalise("MÜLLER") == "muller"


@pytest.mark.parametrize(
    ("written", "folded"),
    [
        ("Łukasiewicz", "lukasiewicz"),
        ("ĐORĐEVIĆ", "dordevic"),
        ("Søren Ørsted", "soren orsted"),
        ("Straße", "strasse"),
        ("STRAẞE", "strasse"),
        ("Æthelred", "aethelred"),
        ("Œuvre", "oeuvre"),
        ("Þórr", "thorr"),
        ("Guðrún", "gudrun"),
        ("I\u0131\u0130i", "iiii"),  # I, dotless i, dotted I, i
        ("Ħamrun", "hamrun"),
        ("Ŧ ŋ ĸ ƀ", "t ng q b"),
        ("ǾØ", "oo"),  # decomposes to a letter that does not: both steps apply
        ("ﬁne", "fine"),  # a compatibility ligature
        ("Иван Ωμέγα", "иван ωμεγα"),  # other scripts keep their letters: no transliteration
    ],
)
def test_latin_letters_that_do_not_decompose_fold_to_their_base_letters(
    written: str, folded: str
) -> None:
    assert normalise(written) == folded


def test_the_letters_of_european_languages_fold_to_ascii() -> None:
    """Latin-1 Supplement and Latin Extended-A: every letter of them (Western, Central and
    Northern European alphabets, Turkish, Maltese, Sami) folds to ASCII letters (Ŀ keeps
    its middle dot and ŉ its apostrophe, which are punctuation)."""
    letters = [chr(p) for p in range(0x00C0, 0x0180) if chr(p).isalpha()]
    folded = {c: normalise(c) for c in letters}
    cased = ("Ll", "Lu", "Lt")
    assert {
        c: f
        for c, f in folded.items()
        if any(unicodedata.category(x) in cased and not x.isascii() for x in f)
    } == {}
