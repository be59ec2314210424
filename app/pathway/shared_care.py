"""GP shared care: an EpisodeOfCare of type ``pathway-codes|shared-care``, managed by the GP
practice, with the dates of its last and next annual review.

The convention is checked on every write, so that the annual reviews MAT 7 asks about can be
counted: the episode names the practice (``managingOrganization``) and carries one
``annual-review`` extension with ``last`` and/or ``next`` (``valueDate``; next after last). A
review is due on ``next``, or, when only ``last`` is known, a year after it.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from app.canonical import WAYMARK
from app.fhir.errors import BusinessRuleViolation
from app.fhir.hooks import WriteEvent, WriteHooks
from app.fhir.store import FhirStore
from app.pathway.codes import codes, reference_id
from app.pathway.gates import add
from app.pathway.phases import PATHWAY_CODES

SHARED_CARE = "shared-care"
ANNUAL_REVIEW = f"{WAYMARK}/StructureDefinition/annual-review"


def install(hooks: WriteHooks) -> None:
    hooks.before("EpisodeOfCare", _check_shared_care)


def is_shared_care(episode: dict[str, Any]) -> bool:
    return SHARED_CARE in codes(episode.get("type", []), PATHWAY_CODES)


def reviews(episode: dict[str, Any]) -> dict[str, date]:
    """``last`` and ``next`` annual review dates, as given (unparseable dates left out)."""
    found: dict[str, date] = {}
    for extension in episode.get("extension", []):
        if extension.get("url") != ANNUAL_REVIEW:
            continue
        for part in extension.get("extension", []):
            if part.get("url") in ("last", "next") and isinstance(part.get("valueDate"), str):
                try:
                    found[part["url"]] = date.fromisoformat(part["valueDate"])
                except ValueError:
                    continue
    return found


def review_due(episode: dict[str, Any]) -> date | None:
    """When the next annual review is due: ``next``, else a year after ``last``."""
    dates = reviews(episode)
    if "next" in dates:
        return dates["next"]
    return add(dates["last"], 1, "a") if "last" in dates else None


async def _check_shared_care(event: WriteEvent) -> None:
    episode = event.after
    if episode is None or not is_shared_care(episode):
        return
    if reference_id(episode.get("managingOrganization"), "Organization") is None:
        raise BusinessRuleViolation(
            "A shared-care EpisodeOfCare names the GP practice sharing care "
            "(managingOrganization: an Organization)",
            expression=("EpisodeOfCare.managingOrganization",),
        )
    marks = [i for i, e in enumerate(episode.get("extension", [])) if e.get("url") == ANNUAL_REVIEW]
    where = f"EpisodeOfCare.extension[{marks[0]}]" if marks else "EpisodeOfCare.extension"
    dates = reviews(episode)
    if len(marks) != 1 or not dates:
        raise BusinessRuleViolation(
            f"A shared-care EpisodeOfCare carries one {ANNUAL_REVIEW} extension with its "
            "'last' and/or 'next' annual review (valueDate)",
            expression=(where,),
        )
    if "last" in dates and "next" in dates and dates["next"] <= dates["last"]:
        raise BusinessRuleViolation(
            "The next annual review comes after the last one", expression=(where,)
        )


async def shared_care_parts(
    store: FhirStore, patient_id: str, now: datetime
) -> tuple[list[dict[str, Any]], list[list[dict[str, Any]]]]:
    """The person's active shared care (one ``sharedCare`` part each) and the annual reviews
    past due (``overdue`` items)."""
    episodes = await store.find(
        "EpisodeOfCare",
        [
            ("patient", f"Patient/{patient_id}"),
            ("status", "active"),
            ("type", f"{PATHWAY_CODES}|{SHARED_CARE}"),
        ],
        count=10,
    )
    found: list[dict[str, Any]] = []
    overdue: list[list[dict[str, Any]]] = []
    for episode in episodes:
        reference = {"reference": f"EpisodeOfCare/{episode['id']}"}
        parts: list[dict[str, Any]] = [{"name": "episode", "valueReference": reference}]
        if episode.get("managingOrganization"):
            parts.append({"name": "practice", "valueReference": episode["managingOrganization"]})
        dates, due = reviews(episode), review_due(episode)
        if "last" in dates:
            parts.append({"name": "lastReview", "valueDate": dates["last"].isoformat()})
        if due is not None:
            parts.append({"name": "reviewDue", "valueDate": due.isoformat()})
        found.append({"name": "sharedCare", "part": parts})
        if due is not None and due < now.date():
            overdue.append(
                [
                    {"name": "kind", "valueCode": "shared-care-review"},
                    {"name": "item", "valueReference": reference},
                    {"name": "since", "valueDateTime": due.isoformat()},
                ]
            )
    return found, overdue
