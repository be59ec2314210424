"""The audit trail of one request: the :class:`~app.fhir.access.Access` port for a caller.

Each interaction the store runs is authorised against the caller's SMART scopes and, when it
succeeds, becomes AuditEvents shaped as IHE Basic Audit Log Patterns (BALP) RESTful events:
type ``rest``, the interaction as subtype, action C/R/U/D/E, the client and this server as
agents, the patient where there is one, the resource or the query as entity, and the request
id. A search or history touching several patients gives one event per patient, as BALP's
query pattern asks. Refused and failed interactions are recorded too (:meth:`failure`).
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode

import orjson

from app.canonical import CLIENT_ID_SYSTEM, WAYMARK
from app.clock import Clock
from app.fhir.access import Touched
from app.fhir.errors import Forbidden
from app.fhir.resources import instant
from app.fhir.store import FhirStore
from app.fhir.text import printable
from app.security.principal import Principal
from app.security.scopes import INTERACTION_PERMISSION, permits

_EVENT_TYPE = {
    "system": "http://terminology.hl7.org/CodeSystem/audit-event-type",
    "code": "rest",
    "display": "RESTful Operation",
}
_INTERACTION_SYSTEM = "http://hl7.org/fhir/restful-interaction"
_ACTION = {
    "create": "C",
    "read": "R",
    "vread": "R",
    "history-instance": "R",
    "update": "U",
    "patch": "U",
    "delete": "D",
}  # searches, history of a type, transactions and batches: E (execute)
#: The codes of http://hl7.org/fhir/restful-interaction; anything else is an operation's name.
_RESTFUL_INTERACTIONS = frozenset(
    {
        "read", "vread", "update", "patch", "delete", "history-instance", "history-type",
        "history-system", "create", "search-type", "search-system", "capabilities",
        "transaction", "batch", "operation",
    }
)  # fmt: skip
_QUERIES = frozenset({"search-type", "search-type-post", "history-type"})
_DCM = "http://dicom.nema.org/resources/ontology/DCM"
_SOURCE_ROLE = {"system": _DCM, "code": "110153", "display": "Source Role ID"}
_DESTINATION_ROLE = {"system": _DCM, "code": "110152", "display": "Destination Role ID"}
_ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
_OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
_PATIENT_ENTITY = {
    "type": {"system": _ENTITY_TYPE, "code": "1", "display": "Person"},
    "role": {"system": _OBJECT_ROLE, "code": "1", "display": "Patient"},
}
_RESOURCE_ENTITY = {
    "type": {"system": _ENTITY_TYPE, "code": "2", "display": "System Object"},
    "role": {"system": _OBJECT_ROLE, "code": "4", "display": "Domain Resource"},
}
_QUERY_ENTITY = {
    "type": {"system": _ENTITY_TYPE, "code": "2", "display": "System Object"},
    "role": {"system": _OBJECT_ROLE, "code": "24", "display": "Query"},
}
_REQUEST_ID_TYPE = {
    "system": "https://profiles.ihe.net/ITI/BALP/CodeSystem/BasicAuditEntityType",
    "code": "XrequestId",
    "display": "X-Request-Id",
}
#: Where a resource names the patient it is about (the patient compartment's usual links).
_PATIENT_ELEMENTS = ("subject", "patient", "for", "beneficiary")
_SOURCE_TYPE = {
    "system": "http://terminology.hl7.org/CodeSystem/security-source-type",
    "code": "4",
    "display": "Application Server",
}


@dataclass(frozen=True, slots=True)
class Attempt:
    """The interaction the request was last asked to do, for recording a failure."""

    interaction: str
    resource_type: str | None
    resource_id: str | None = None


@dataclass(slots=True)
class _Done:
    interaction: str
    resource_type: str
    touched: Sequence[Touched]
    query: str | None


@dataclass
class RequestAudit:
    """Authorises and records one request's interactions (an ``Access`` for the store)."""

    principal: Principal | None
    request_id: str
    server: str  # this server's base URL
    clock: Clock
    client_address: str | None = None
    attempt: Attempt | None = None
    #: The request's query string, recorded as the query entity of a refused search.
    query: str | None = None
    #: The operation the request invokes ($pathway: "pathway"), recorded as one AuditEvent
    #: naming everything the operation touched, rather than an event per read inside it.
    operation: str | None = None
    done: list[_Done] = field(default_factory=list)
    #: Interactions that failed without failing the request (entries of a batch).
    failures: list[tuple[Attempt, int, str]] = field(default_factory=list)
    #: What an operation's rules read for the caller (recorded in the operation's event).
    consulted_by_operation: list[Touched] = field(default_factory=list)

    # -- the Access port ----------------------------------------------------------------------

    @property
    def source(self) -> str | None:
        return None if self.principal is None else client_uri(self.principal.client_id)

    def authorise(
        self, interaction: str, resource_type: str, resource_id: str | None = None
    ) -> None:
        self.attempt = Attempt(interaction, resource_type, resource_id)
        if not self.permits(interaction, resource_type):
            permission = INTERACTION_PERMISSION[interaction]
            raise Forbidden(
                f"The access token does not allow '{interaction}' on {resource_type}: it needs "
                f"a scope such as system/{resource_type}.{permission}"
            )

    def permits(self, interaction: str, resource_type: str) -> bool:
        permission = INTERACTION_PERMISSION[interaction]
        return self.principal is not None and permits(
            self.principal.scopes, resource_type, permission
        )

    def touched(
        self,
        interaction: str,
        resource_type: str,
        resources: Sequence[Touched],
        *,
        query: str | None = None,
    ) -> None:
        self.done.append(_Done(interaction, resource_type, resources, query))

    def failed(
        self,
        interaction: str,
        resource_type: str,
        resource_id: str | None,
        *,
        status: int,
        reason: str,
    ) -> None:
        self.failures.append((Attempt(interaction, resource_type, resource_id), status, reason))

    def consulted(self, resources: Sequence[Touched]) -> None:
        # An operation answers with what its rules read; a plain write's rules (a referral's
        # gate evaluation) read for the server, and its events name what the caller did.
        if self.operation is not None:
            self.consulted_by_operation.extend(resources)

    # -- writing the trail ---------------------------------------------------------------------

    def documents(self) -> list[dict[str, Any]]:
        """The AuditEvents of what was done and of what failed without failing the request
        (batch entries), once: recording them empties the list."""
        recorded = self.clock()
        if self.operation is not None and (self.done or self.consulted_by_operation):
            documents = [self._operation_event(recorded)]
        else:
            documents = [event for done in self.done for event in self._events(done, recorded)]
        documents += [self._failure(*failure) for failure in self.failures]
        self.done.clear()
        self.failures.clear()
        self.consulted_by_operation.clear()
        return documents

    async def write(self, store: FhirStore) -> None:
        """Store the AuditEvents of what succeeded, on the request's own transaction."""
        await store.create_trusted("AuditEvent", self.documents())

    def failure_document(self, *, status: int, reason: str) -> dict[str, Any]:
        """The AuditEvent of a refused or failed request."""
        attempt = self.attempt or Attempt("operation", None)
        if self.operation is not None:  # whatever inside it failed, the operation did
            attempt = Attempt(self.operation, attempt.resource_type, attempt.resource_id)
        return self._failure(attempt, status, reason)

    def _failure(self, attempt: Attempt, status: int, reason: str) -> dict[str, Any]:
        event = self._event(
            attempt.interaction,
            self.clock(),
            outcome="8" if status >= 500 else "4",
            description=f"{status} {reason}",
        )
        if attempt.resource_type is not None and attempt.resource_id is not None:
            # As sent, which a refusal may be for: control characters escaped, so it stores.
            reference = printable(f"{attempt.resource_type}/{attempt.resource_id}")
            event["entity"].insert(0, {"what": {"reference": reference}, **_RESOURCE_ENTITY})
            if attempt.resource_type == "Patient":
                event["entity"].insert(0, {"what": {"reference": reference}, **_PATIENT_ENTITY})
        elif attempt.interaction in _QUERIES and attempt.resource_type is not None:
            query = f"{attempt.resource_type}?{_normalised(self.query)}"
            event["entity"].insert(0, {**_QUERY_ENTITY, "query": _base64(query)})
        return event

    def _operation_event(self, recorded: datetime) -> dict[str, Any]:
        assert self.operation is not None
        event = self._event(self.operation, recorded)
        touched = [t for done in self.done for t in done.touched]
        touched += self.consulted_by_operation
        versions = sorted({_reference(*t) for t in touched})
        patients = sorted({p for t in touched for p in patients_of(*t)})
        event["entity"][:0] = [
            *({"what": {"reference": p}, **_PATIENT_ENTITY} for p in patients),
            *({"what": {"reference": v}, **_RESOURCE_ENTITY} for v in versions),
        ]
        return event

    def _events(self, done: _Done, recorded: datetime) -> list[dict[str, Any]]:
        if done.interaction in _QUERIES:
            query = {**_QUERY_ENTITY, "query": _base64(f"{done.resource_type}?{done.query or ''}")}
            patients: list[str | None] = [
                *sorted({p for t in done.touched for p in patients_of(*t)})
            ]
            events = []
            for patient in patients or [None]:
                event = self._event(done.interaction, recorded)
                if patient is not None:
                    event["entity"].insert(0, {"what": {"reference": patient}, **_PATIENT_ENTITY})
                event["entity"].insert(0, query)
                events.append(event)
            return events
        events = []
        for resource_type, resource_id, content in done.touched:
            event = self._event(done.interaction, recorded)
            what = _reference(resource_type, resource_id, content)
            entities = [{"what": {"reference": what}, **_RESOURCE_ENTITY}]
            entities += [
                {"what": {"reference": patient}, **_PATIENT_ENTITY}
                for patient in sorted(patients_of(resource_type, resource_id, content))
            ]
            event["entity"][:0] = entities
            events.append(event)
        return events

    def _event(
        self,
        interaction: str,
        recorded: datetime,
        *,
        outcome: str = "0",
        description: str | None = None,
    ) -> dict[str, Any]:
        subtype = "search-type" if interaction == "search-type-post" else interaction
        subtypes = [{"system": _INTERACTION_SYSTEM, "code": subtype}]
        if subtype not in _RESTFUL_INTERACTIONS:  # an operation: say which, as BALP does
            subtypes = [
                {"system": _INTERACTION_SYSTEM, "code": "operation"},
                {"system": f"{WAYMARK}/OperationDefinition", "code": subtype},
            ]
        client: dict[str, Any] = {
            "type": {"coding": [_SOURCE_ROLE]},
            "who": (
                {"identifier": {"system": CLIENT_ID_SYSTEM, "value": self.principal.client_id}}
                if self.principal is not None
                else {"display": "unauthenticated caller"}
            ),
            "requestor": True,
        }
        if self.client_address:
            client["network"] = {"address": self.client_address, "type": "2"}
        event: dict[str, Any] = {
            "resourceType": "AuditEvent",
            "type": _EVENT_TYPE,
            "subtype": subtypes,
            "action": _ACTION.get(subtype, "E"),
            "recorded": instant(recorded),
            "outcome": outcome,
            "agent": [
                client,
                {
                    "type": {"coding": [_DESTINATION_ROLE]},
                    "who": {"display": "Waymark", "identifier": {"value": self.server}},
                    "requestor": False,
                    "network": {"address": self.server, "type": "5"},
                },
            ],
            "source": {
                "observer": {"display": "Waymark", "identifier": {"value": self.server}},
                "type": [_SOURCE_TYPE],
            },
            "entity": [
                {"what": {"identifier": {"value": self.request_id}}, "type": _REQUEST_ID_TYPE}
            ],
        }
        if description is not None:
            event["outcomeDesc"] = description
        return event


def client_uri(client_id: str) -> str:
    """A registered client as a URI (``meta.source`` of what it writes)."""
    return f"{CLIENT_ID_SYSTEM}/{client_id}"


def patients_of(resource_type: str, resource_id: str, content: bytes | None) -> set[str]:
    """The patients a stored resource is about, as ``Patient/id`` references."""
    if resource_type == "Patient":
        return {f"Patient/{resource_id}"}
    if content is None or resource_type == "AuditEvent":
        return set()
    document = orjson.loads(content)
    found = set()
    for element in _PATIENT_ELEMENTS:
        value = document.get(element)
        for reference in value if isinstance(value, list) else [value]:
            text = reference.get("reference") if isinstance(reference, dict) else None
            if isinstance(text, str) and "Patient/" in text:
                found.add("Patient/" + text.split("Patient/", 1)[1].split("/")[0])
    return found


def _reference(resource_type: str, resource_id: str, content: bytes | None) -> str:
    """The version touched, as a reference (``Type/id/_history/n``; ``Type/id`` if unknown)."""
    version = _version_of(content)
    return f"{resource_type}/{resource_id}" + (f"/_history/{version}" if version else "")


def _version_of(content: bytes | None) -> str | None:
    if content is None:
        return None
    meta = orjson.loads(content).get("meta") or {}
    version = meta.get("versionId")
    return version if isinstance(version, str) else None


def _normalised(query: str | None) -> str:
    """A query string encoded as the successful searches' entities record it."""
    return urlencode(parse_qsl(query or "", keep_blank_values=True))


def _base64(text: str) -> str:
    return base64.b64encode(text.encode()).decode("ascii")
