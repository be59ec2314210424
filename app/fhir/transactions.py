"""Transaction and batch Bundles (FHIR R4, http.html#transaction), on the caller's connection.

A transaction is all or nothing: its entries run in the order FHIR prescribes (DELETE, then
POST, then PUT and PATCH, then GET and HEAD) and the first entry that fails raises its error,
located at that entry, so the edge rolls the whole transaction back. Before anything is
written, every POST and PUT entry's identity is settled (a new id, or the resource its
condition matches), so an entry may refer to any other by its fullUrl, whatever their order;
those references, and conditional references (``Patient?identifier=...``, resolved by search),
are rewritten to ``Type/id`` in each resource as it is written.

A batch runs its entries in request order, each in its own SAVEPOINT: a failing entry rolls
back only its own writes and answers with its own status and OperationOutcome, and the rest
commit. Batch entries are independent, so none may refer to another by its fullUrl.

The response keeps the request's order either way.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import uuid
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, TypeVar
from urllib.parse import parse_qsl

import orjson
from sqlalchemy.ext.asyncio import AsyncConnection

from app.fhir import bundles
from app.fhir.budget import ResponseTooCostly
from app.fhir.bundle_entries import BundleRequest, Entry, locate
from app.fhir.errors import (
    Conflict,
    FhirError,
    Gone,
    InternalError,
    InvalidRequest,
    InvalidResource,
    Issue,
    NotFound,
    PreconditionFailed,
    operation_outcome,
)
from app.fhir.http import etag
from app.fhir.repository import StoredVersion
from app.fhir.resources import SERVED, instant
from app.fhir.search.parse import conditional_criteria, parse_search
from app.fhir.search.query import planned_search_resources
from app.fhir.store import FhirStore, require_valid_id
from app.fhir.validation import validate_resource

#: The order a transaction's entries run in (FHIR R4 http.html#trules); GET and HEAD last.
_PHASES = (("DELETE",), ("POST",), ("PUT", "PATCH"), ("GET", "HEAD"))
_BUNDLE_LOCAL = re.compile(r"^urn:(uuid|oid):")
_CONDITIONAL_REFERENCE = re.compile(r"^([A-Z][A-Za-z]*)\?(.+)$")

T = TypeVar("T")

log = logging.getLogger("waymark.transactions")


@dataclass(frozen=True, slots=True)
class _Target:
    """Where a POST or PUT entry writes: a new or given id, or what ifNoneExist matched."""

    resource_id: str
    existing: StoredVersion | None = None


@dataclass(slots=True)
class _Answer:
    """One response entry: its status, response elements and the resource's stored bytes."""

    status: int
    full_url: str | None = None
    response: dict[str, Any] = field(default_factory=dict)
    resource: bytes | None = None

    def encode(self) -> bytes:
        entry: dict[str, Any] = {"fullUrl": self.full_url} if self.full_url else {}
        status = f"{self.status} {HTTPStatus(self.status).phrase}"
        entry["response"] = {"status": status, **self.response}
        encoded = orjson.dumps(entry)
        if self.resource is None:
            return encoded
        return encoded[:-1] + b',"resource":' + self.resource + b"}"


async def process(
    bundle: BundleRequest,
    *,
    store: FhirStore,
    conn: AsyncConnection,
    base_url: str,
    return_preference: str = "representation",
) -> bytes:
    """Run ``bundle`` on ``conn`` (the caller's one transaction) and answer with the
    transaction-response or batch-response Bundle; a failing transaction raises instead."""
    store.budget.plan(
        sum(_planned_resources(entry, store) for entry in bundle.entries),
        what=f"This {bundle.type} of {len(bundle.entries)} entries",
        bundle=True,
    )
    processor = _Processor(
        store=store, conn=conn, base_url=base_url, return_preference=return_preference
    )
    if bundle.type == "transaction":
        entries = [entry for entry in bundle.entries if isinstance(entry, Entry)]
        assert len(entries) == len(bundle.entries), "a transaction's entries were all read"
        answers = await processor.transaction(entries)
    else:
        answers = await processor.batch(bundle.entries)
    return bundles.response(
        bundle_type=f"{bundle.type}-response",
        entries=[answer.encode() for answer in answers],
        now=store.clock(),
    )


def _planned_resources(entry: Entry | FhirError, store: FhirStore) -> int:
    """The most resources ``entry`` may read for the answer: a search's page and includes,
    one resource for any other entry, none for an entry that failed to be read (or whose
    search does not parse: it fails on its own, having read nothing)."""
    if isinstance(entry, FhirError):
        return 0
    if entry.method not in ("GET", "HEAD") or entry.resource_id is not None:
        return 1
    try:
        request = parse_search(
            entry.resource_type,
            _search_params(entry),
            default_count=store.default_page_size,
            max_count=store.max_page_size,
        )
    except FhirError:
        return 0
    return planned_search_resources(request)


def _search_params(entry: Entry) -> list[tuple[str, str]]:
    return [
        (name, value)
        for name, value in parse_qsl(entry.query or "", keep_blank_values=True)
        if name != "_format"
    ]


class _Processor:
    def __init__(
        self,
        *,
        store: FhirStore,
        conn: AsyncConnection,
        base_url: str,
        return_preference: str,
    ) -> None:
        self.store = store
        self.conn = conn
        self.base_url = base_url
        self.return_preference = return_preference
        #: fullUrl -> "Type/id" for the entries of a transaction.
        self.local_references: dict[str, str] = {}
        #: Every fullUrl of a batch, to explain why a batch entry cannot refer to another.
        self.batch_full_urls: set[str] = set()

    # -- the two kinds of Bundle ------------------------------------------------------------

    async def transaction(self, entries: list[Entry]) -> list[_Answer]:
        _refuse_shared_conditions(entries)
        answers: dict[int, _Answer] = {}
        for entry in _in_phase(entries, _PHASES[0]):
            answers[entry.index] = await _at(entry, self._delete(entry))
        targets: dict[int, _Target] = {}
        for entry in _in_phase(entries, ("POST", "PUT")):
            targets[entry.index] = await _at(entry, self._target(entry))
        _refuse_overlaps(entries, targets)
        self.local_references = {
            entry.full_url: f"{entry.resource_type}/{targets[entry.index].resource_id}"
            for entry in entries
            if entry.full_url is not None and entry.index in targets
        }
        for phase in _PHASES[1:]:
            for entry in _in_phase(entries, phase):
                answers[entry.index] = await _at(
                    entry, self._execute(entry, targets.get(entry.index))
                )
        return [answers[entry.index] for entry in entries]

    async def batch(self, entries: list[Entry | FhirError]) -> list[_Answer]:
        self.batch_full_urls = {e.full_url for e in entries if isinstance(e, Entry) and e.full_url}
        answers = []
        for entry in entries:
            if isinstance(entry, FhirError):
                answers.append(_failed(entry))
                continue
            answers.append(await self._batch_entry(entry))
        return answers

    async def _batch_entry(self, entry: Entry) -> _Answer:
        """One batch entry in its own savepoint. Batch entries are independent, so even an
        unexpected exception fails only its own entry, as a 500 with no internals in it."""
        try:
            async with self.conn.begin_nested():
                target = await self._target(entry) if entry.method in ("POST", "PUT") else None
                return await self._execute(entry, target)
        except ResponseTooCostly:
            raise  # the whole answer is past its budget: no entry's alone
        except FhirError as error:
            failure, reason = _located(error, entry), type(error).__name__
        except Exception as error:
            # Only the type and the entry's place: messages can carry patient data.
            log.error(
                "unhandled %s in Bundle.entry[%d] (%s %s) of a batch",
                type(error).__name__,
                entry.index,
                entry.method,
                entry.resource_type,
            )
            internal = InternalError("An internal error occurred; this entry changed nothing")
            failure, reason = _located(internal, entry), type(error).__name__
        self.store.warnings.clear()  # what the failed entry raised is not another entry's
        self.store.access.failed(
            entry.interaction,
            entry.resource_type,
            entry.resource_id,
            status=failure.status,
            reason=reason,
        )
        return _failed(failure)

    # -- settling identities before anything is written --------------------------------------

    async def _target(self, entry: Entry) -> _Target:
        if entry.method == "POST":
            return await self._create_target(entry)
        if entry.query is None:
            assert entry.resource_id is not None
            return _Target(entry.resource_id)
        return await self._conditional_update_target(entry)

    async def _create_target(self, entry: Entry) -> _Target:
        if entry.if_none_exist is not None:
            # A match is answered without store.create: ask for the create permission here.
            self.store.access.authorise("create", entry.resource_type)
            # As for POST with If-None-Exist: an invalid resource is refused even if it matches.
            validate_resource(
                entry.resource, expected_type=entry.resource_type, chi_system=self.store.chi_system
            )
            existing = await self.store.conditional_match(
                entry.resource_type, entry.if_none_exist, criteria="request.ifNoneExist"
            )
            if existing is not None:
                return _Target(existing.id, existing)
        return _Target(str(uuid.uuid4()))

    async def _conditional_update_target(self, entry: Entry) -> _Target:
        """FHIR's conditional update: one match is updated, none creates, more is 412."""
        assert entry.resource is not None
        assert entry.query is not None
        existing = await self.store.conditional_match(
            entry.resource_type, entry.query, criteria="The conditional update"
        )
        body_id = entry.resource.get("id")
        if existing is not None:
            if body_id is not None and body_id != existing.id:
                raise InvalidResource(
                    f"The resource's id '{body_id}' is not that of the {entry.resource_type} "
                    "the conditional update matched",
                    expression=("resource.id",),
                )
            return _Target(existing.id)
        if body_id is None:
            return _Target(str(uuid.uuid4()))
        if not isinstance(body_id, str):
            raise InvalidResource("The resource's id must be a string", expression=("resource.id",))
        require_valid_id(body_id)
        if await self._exists(entry.resource_type, body_id):
            raise Conflict(
                f"No {entry.resource_type} matches the conditional update, but the resource "
                f"names the id of an existing one ({entry.resource_type}/{body_id})",
                expression=("resource.id",),
            )
        return _Target(body_id)

    async def _exists(self, resource_type: str, resource_id: str) -> bool:
        try:
            await self.store.read(resource_type, resource_id)
        except (NotFound, Gone):
            return False
        return True

    # -- running one entry ----------------------------------------------------------------

    async def _execute(self, entry: Entry, target: _Target | None) -> _Answer:
        if entry.method == "POST":
            assert target is not None
            return await self._create(entry, target)
        if entry.method == "PUT":
            assert target is not None
            return await self._update(entry, target)
        if entry.method == "PATCH":
            return await self._patch(entry)
        if entry.method == "DELETE":
            return await self._delete(entry)
        if entry.resource_id is None:
            return await self._search(entry)
        return await self._read(entry)

    async def _create(self, entry: Entry, target: _Target) -> _Answer:
        if target.existing is not None:
            return self._written(target.existing, 200)
        assert entry.resource is not None
        await self._resolve_references(entry.resource, entry.resource_type)
        result = await self.store.create(
            entry.resource, resource_type=entry.resource_type, resource_id=target.resource_id
        )
        return self._written(result.stored, 201)

    async def _update(self, entry: Entry, target: _Target) -> _Answer:
        assert entry.resource is not None
        document = {**entry.resource, "id": target.resource_id}
        await self._resolve_references(document, entry.resource_type)
        result = await self.store.update(
            entry.resource_type, target.resource_id, document, if_match=entry.if_match
        )
        return self._written(result.stored, 201 if result.created else 200)

    async def _patch(self, entry: Entry) -> _Answer:
        assert entry.resource_id is not None
        assert entry.patch is not None
        # A patch may add a reference to another entry, e.g. {"op": "add", "value": {...}}.
        await self._resolve_references(entry.patch, "resource.data")
        result = await self.store.patch(
            entry.resource_type, entry.resource_id, entry.patch, if_match=entry.if_match
        )
        return self._written(result.stored, 200)

    async def _delete(self, entry: Entry) -> _Answer:
        assert entry.resource_id is not None
        stored = await self.store.delete(
            entry.resource_type, entry.resource_id, if_match=entry.if_match
        )
        # Deleting what is already deleted succeeds, with nothing new to name (as for REST).
        return _Answer(204, response={"etag": etag(stored.version_id)} if stored else {})

    async def _read(self, entry: Entry) -> _Answer:
        assert entry.resource_id is not None
        if entry.version_id is None:
            stored = await self.store.read(entry.resource_type, entry.resource_id)
        else:
            stored = await self.store.vread(
                entry.resource_type, entry.resource_id, entry.version_id
            )
        if stored.content is not None and entry.method == "GET":
            self.store.budget.charge(len(stored.content))
        return _Answer(
            200,
            full_url=f"{self.base_url}/{stored.resource_type}/{stored.id}",
            response=_version_elements(stored),
            resource=None if entry.method == "HEAD" else stored.content,
        )

    async def _search(self, entry: Entry) -> _Answer:
        searchset = await self.store.search(entry.resource_type, _search_params(entry))
        return _Answer(200, resource=None if entry.method == "HEAD" else searchset)

    def _written(self, stored: StoredVersion, status: int) -> _Answer:
        """The answer to a write, shaped by ``Prefer: return=...`` as for the REST API."""
        path = f"{stored.resource_type}/{stored.id}"
        response = {
            "location": f"{self.base_url}/{path}/_history/{stored.version_id}",
            **_version_elements(stored),
        }
        answer = _Answer(status, full_url=f"{self.base_url}/{path}", response=response)
        warnings, self.store.warnings[:] = list(self.store.warnings), []
        if self.return_preference == "representation":
            answer.resource = stored.content
        elif self.return_preference == "OperationOutcome":
            note = Issue("informational", f"{path} version {stored.version_id}", "information")
            warnings.insert(0, note)
        if warnings:  # what a write raised without refusing it (an advisory gate not met)
            answer.response["outcome"] = operation_outcome(warnings)
        return answer

    # -- references -------------------------------------------------------------------------

    async def _resolve_references(self, document: Any, root: str) -> None:
        """Rewrite, in place, references to other entries and conditional references."""
        for path, holder in list(_reference_holders(document, root)):
            holder["reference"] = await self._resolve_reference(
                holder["reference"], f"{path}.reference"
            )

    async def _resolve_reference(self, reference: str, path: str) -> str:
        local = self.local_references.get(reference)
        if local is not None:
            return local
        if _BUNDLE_LOCAL.match(reference):
            raise InvalidResource(self._unresolved(reference), expression=(path,))
        conditional = _CONDITIONAL_REFERENCE.match(reference)
        if conditional is None:
            return reference
        resource_type, query = conditional.groups()
        if resource_type not in SERVED:
            raise InvalidResource(
                f"A conditional reference names {resource_type}, which is not served here",
                expression=(path,),
            )
        # The query is not repeated in messages: it usually holds a patient's identifier.
        criteria = "The conditional reference"
        try:
            conditional_criteria(resource_type, query, where=criteria, expression=())
            match = await self.store.conditional_match(resource_type, query, criteria=criteria)
        except FhirError as error:
            raise _with_expression(error, path) from error
        if match is None:
            # 412, as FHIR says, with the more telling issue code.
            missing = f"{criteria} matches no {resource_type}"
            raise PreconditionFailed(
                missing, issues=[Issue("not-found", missing, expression=(path,))]
            )
        return f"{resource_type}/{match.id}"

    def _unresolved(self, reference: str) -> str:
        if reference in self.batch_full_urls:
            return (
                f"The reference {reference} names another entry of this batch; batch entries "
                "are processed independently, so send entries that refer to each other as a "
                "transaction Bundle"
            )
        return f"The reference {reference} names no POST or PUT entry's fullUrl in this Bundle"


def _in_phase(entries: list[Entry], methods: tuple[str, ...]) -> Iterator[Entry]:
    return (entry for entry in entries if entry.method in methods)


async def _at(entry: Entry, step: Awaitable[T]) -> T:
    """Await one transaction step; its failure becomes the failure of ``entry``."""
    try:
        return await step
    except FhirError as error:
        raise _located(error, entry) from error


def _located(error: FhirError, entry: Entry) -> FhirError:
    # A PATCH entry's resource is a Binary: its target's element paths are not the Binary's.
    body_type = entry.resource_type if entry.method in ("POST", "PUT") else None
    return locate(error, entry.index, body_type, f"{entry.method} {entry.resource_type}")


def _failed(error: FhirError) -> _Answer:
    return _Answer(error.status, response={"outcome": operation_outcome(error.issues)})


def _version_elements(stored: StoredVersion) -> dict[str, str]:
    return {"etag": etag(stored.version_id), "lastModified": instant(stored.last_updated)}


def _with_expression(error: FhirError, path: str) -> FhirError:
    issues = [
        dataclasses.replace(issue, expression=(path, *issue.expression)) for issue in error.issues
    ]
    return dataclasses.replace(error, issues=issues)


def _refuse_overlaps(entries: list[Entry], targets: dict[int, _Target]) -> None:
    """FHIR fails a transaction whose DELETE, POST and PUT/PATCH entries share a resource."""
    changed_by: dict[tuple[str, str], int] = {}
    for entry in entries:
        if not entry.writes:
            continue
        target = targets.get(entry.index)
        resource_id = target.resource_id if target is not None else entry.resource_id
        assert resource_id is not None
        key = (entry.resource_type, resource_id)
        if key in changed_by:
            raise _located(
                InvalidRequest(
                    f"{entry.resource_type}/{resource_id} is also the subject of "
                    f"Bundle.entry[{changed_by[key]}]; a transaction changes each resource once"
                ),
                entry,
            )
        changed_by[key] = entry.index


def _refuse_shared_conditions(entries: list[Entry]) -> None:
    """Two conditional creates or updates with the same criteria name one resource: FHIR
    fails a transaction whose entries' identities, resolved ones included, overlap
    (http.html#trules). Settled against the state before the transaction, both would find
    nothing and each create one, the duplicate a condition exists to prevent."""
    first_with: dict[tuple[str, tuple[tuple[str, str], ...]], int] = {}
    for entry in entries:
        condition = entry.if_none_exist if entry.method == "POST" else None
        if entry.method == "PUT" and entry.resource_id is None:
            condition = entry.query
        if condition is None:
            continue
        criteria = parse_qsl(condition.lstrip("?"), keep_blank_values=True)
        key = (entry.resource_type, tuple(sorted(criteria)))
        if key in first_with:
            raise _located(
                InvalidRequest(
                    f"Bundle.entry[{first_with[key]}] has the same conditions on "
                    f"{entry.resource_type}: both name one resource, and a transaction "
                    "changes each resource once; send that resource in one entry",
                    expression=("request",),
                ),
                entry,
            )
        first_with[key] = entry.index


def _reference_holders(node: Any, path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every object under ``node`` with a string ``reference`` (a Reference), with its path."""
    if isinstance(node, dict):
        if isinstance(node.get("reference"), str):
            yield path, node
        for key, child in node.items():
            yield from _reference_holders(child, f"{path}.{key}")
    elif isinstance(node, list):
        for index, item in enumerate(node):
            yield from _reference_holders(item, f"{path}[{index}]")
