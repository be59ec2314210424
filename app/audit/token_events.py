"""The AuditEvent of a token request at ``/auth/token``, granted or refused.

Shaped as IHE BALP's profile for IUA ITI-71 "Get Access Token" (``IHE.IUA.71``), the
authorisation-server side of an OAuth token request: type DICOM 110114 "User Authentication"
(the event a login or token issuance is, in DICOM's audit vocabulary), subtype ITI-71, action
E; the client (DICOM 110150 "Application") and this server (BALP "AuthzOauthService") as
agents; the request as entity. BALP's profile covers the success; a refusal is recorded in the
same shape with outcome 4 and the reason, so that one search (``subtype=ITI-71``) shows every
attempt, including someone trying client names or replaying an assertion. The REST pattern
(type ``rest``) does not fit: a token request is no FHIR interaction.

Nothing of the assertion or the access token is recorded; the token's ``jti`` is, as BALP's
OAuth token-use patterns record it (``urn:ietf:params:oauth:jti:...``), so that the grant can
be matched to what the token was used for.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from app.canonical import CLIENT_ID_SYSTEM
from app.fhir.resources import instant
from app.security.tokens import AccessGrant, TokenRequestError

_DCM = "http://dicom.nema.org/resources/ontology/DCM"
_TYPE = {"system": _DCM, "code": "110114", "display": "User Authentication"}
_SUBTYPE = {"system": "urn:ihe:event-type-code", "code": "ITI-71", "display": "Get Access Token"}
_CLIENT_ROLE = {"system": _DCM, "code": "110150", "display": "Application"}
_SERVER_ROLE = {
    "system": "https://profiles.ihe.net/ITI/BALP/CodeSystem/UserAgentTypes",
    "code": "AuthzOauthService",
    "display": "OAuth Authorization Server",
}
_REQUEST_ID_TYPE = {
    "system": "https://profiles.ihe.net/ITI/BALP/CodeSystem/BasicAuditEntityType",
    "code": "XrequestId",
    "display": "X-Request-Id",
}
_SOURCE_TYPE = {
    "system": "http://terminology.hl7.org/CodeSystem/security-source-type",
    "code": "4",
    "display": "Application Server",
}
_SYSTEM_OBJECT = {
    "system": "http://terminology.hl7.org/CodeSystem/audit-entity-type",
    "code": "2",
    "display": "System Object",
}
JTI_PREFIX = "urn:ietf:params:oauth:jti:"


def token_granted(
    grant: AccessGrant,
    *,
    requested: str,
    recorded: datetime,
    request_id: str,
    server: str,
    client_address: str | None,
) -> dict[str, Any]:
    client = _client_agent(grant.client_id, client_address, authenticated=True)
    client["policy"] = [JTI_PREFIX + grant.token_id]
    event = _event(recorded, "0", client, request_id, server)
    event["entity"].append(
        {
            "type": _SYSTEM_OBJECT,
            "description": "access token request",
            "detail": [
                {"type": "requested scope", "valueString": requested},
                {"type": "granted scope", "valueString": " ".join(grant.scopes)},
                {"type": "expires_in", "valueString": str(grant.expires_in)},
            ],
        }
    )
    return event


def token_refused(
    error: TokenRequestError,
    *,
    recorded: datetime,
    request_id: str,
    server: str,
    client_address: str | None,
) -> dict[str, Any]:
    client = _client_agent(error.client_id, client_address, authenticated=False)
    outcome = "8" if error.status >= 500 and error.status != 503 else "4"
    event = _event(recorded, outcome, client, request_id, server)
    event["outcomeDesc"] = f"{error.status} {error.error}: {error.reason}"
    return event


def _client_agent(
    client_id: str | None, address: str | None, *, authenticated: bool
) -> dict[str, Any]:
    who: dict[str, Any]
    if client_id is None:
        who = {"display": "unauthenticated caller"}
    else:
        who = {"identifier": {"system": CLIENT_ID_SYSTEM, "value": client_id}}
        if not authenticated:
            who["display"] = "claimed by an unauthenticated caller"
    agent: dict[str, Any] = {"type": {"coding": [_CLIENT_ROLE]}, "who": who, "requestor": True}
    if address:
        agent["network"] = {"address": address, "type": "2"}
    return agent


def _event(
    recorded: datetime, outcome: str, client: dict[str, Any], request_id: str, server: str
) -> dict[str, Any]:
    return {
        "resourceType": "AuditEvent",
        "type": _TYPE,
        "subtype": [_SUBTYPE],
        "action": "E",
        "recorded": instant(recorded),
        "outcome": outcome,
        "agent": [
            client,
            {
                "type": {"coding": [_SERVER_ROLE]},
                "who": {"display": "Waymark", "identifier": {"value": server}},
                "requestor": False,
                "network": {"address": server, "type": "5"},
            },
        ],
        "source": {
            "observer": {"display": "Waymark", "identifier": {"value": server}},
            "type": [_SOURCE_TYPE],
        },
        "entity": [{"what": {"identifier": {"value": request_id}}, "type": _REQUEST_ID_TYPE}],
    }
