"""The FHIR repository contract, written once: create, read, vread, update (If-Match), patch,
delete, history and search, with every version kept.

Every write bumps ``meta.versionId`` and ``meta.lastUpdated``, keeps the previous version,
maintains the search index and runs the write hooks, all on the caller's transaction.
"""

from __future__ import annotations

import copy
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode

import jsonpatch
import orjson

from app.clock import Clock
from app.fhir import bundles
from app.fhir.access import OPEN_ACCESS, Access, OpenAccess, Touched
from app.fhir.budget import RequestBudget
from app.fhir.errors import (
    BusinessRuleViolation,
    Gone,
    InvalidRequest,
    InvalidResource,
    Issue,
    MultipleMatches,
    NotFound,
    PreconditionFailed,
)
from app.fhir.history import HistoryRequest
from app.fhir.hooks import WriteEvent, WriteHooks
from app.fhir.numbers import whole_number
from app.fhir.repository import ResourceRepository, StoredVersion
from app.fhir.resources import instant
from app.fhir.search.index import IndexRows, index_rows
from app.fhir.search.parse import SearchRequest, parse_search
from app.fhir.search.query import run_search
from app.fhir.search.scoped import scoped_search
from app.fhir.validation import validate_resource

_HTTP_METHODS = {"create": "POST", "update": "PUT", "patch": "PATCH"}
ID_PATTERN = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")


def require_valid_id(resource_id: str) -> None:
    if not ID_PATTERN.match(resource_id):
        raise InvalidRequest(
            "A resource id is 1-64 letters, digits, '-' or '.'", expression=("id",)
        )


@dataclass(frozen=True, slots=True)
class HistoryPage:
    versions: list[StoredVersion]
    more: bool  # further versions follow this page


@dataclass(frozen=True, slots=True)
class WriteResult:
    stored: StoredVersion
    created: bool  # a new resource (201), rather than an existing one (200)


class FhirStore:
    def __init__(
        self,
        repository: ResourceRepository,
        *,
        clock: Clock,
        hooks: WriteHooks,
        chi_system: str,
        base_url: str,
        default_page_size: int = 50,
        max_page_size: int = 500,
        access: Access = OPEN_ACCESS,
        budget: RequestBudget | None = None,
    ) -> None:
        self.repo = repository
        self.clock = clock
        self.hooks = hooks
        self.chi_system = chi_system
        self.base_url = base_url
        self.default_page_size = default_page_size
        self.max_page_size = max_page_size
        self.access = access
        #: What answering this store's one request may cost (app/fhir/budget.py).
        self.budget = budget or RequestBudget.unlimited()
        #: Warnings the write raised without refusing it (an advisory gate not met): the
        #: response carries them as OperationOutcome issues.
        self.warnings: list[Issue] = []
        #: What the server's own rules derived from resources of a type (parsed definitions),
        #: kept for the rest of this store's one transaction and forgotten as soon as a
        #: resource of that type is written through it. Shared with as_server() copies.
        self._derived: dict[str, dict[Any, Any]] = {}

    def as_server(self) -> FhirStore:
        """This store, on the same transaction, acting for the server itself: for domain
        rules that write what follows from a caller's write (a referral's Task) whatever the
        caller's scopes. Versions it writes still name the caller as their source."""
        server = copy.copy(self)
        server.access = OpenAccess(self.access.source)
        return server

    def derived_from(self, resource_type: str) -> dict[Any, Any]:
        """A memo for what is derived from ``resource_type`` resources in this transaction."""
        return self._derived.setdefault(resource_type, {})

    # -- reads ---------------------------------------------------------------------------

    async def current(self, resource_type: str, resource_id: str) -> dict[str, Any] | None:
        """The current version as a document, None when missing or deleted (no access check:
        for the server's own rules)."""
        stored = await self.repo.current(resource_type, resource_id)
        if stored is None or stored.content is None:
            return None
        self.access.consulted([_touched(stored)])
        document: dict[str, Any] = orjson.loads(stored.content)
        return document

    async def find(
        self, resource_type: str, params: list[tuple[str, str]], *, count: int = 100
    ) -> list[dict[str, Any]]:
        """The documents a search matches, first ``count`` of them (no access check: for the
        server's own rules, with criteria the server made; criteria a client sent go through
        :meth:`search_request`)."""
        request = parse_search(resource_type, params, default_count=count, max_count=count)
        page = await run_search(self.repo.conn, request, self.base_url)
        self.access.consulted([(resource_type, rid, content) for rid, content in page.rows])
        return [orjson.loads(content) for _, content in page.rows]

    async def read(self, resource_type: str, resource_id: str) -> StoredVersion:
        self.access.authorise("read", resource_type, resource_id)
        current = await self.repo.current(resource_type, resource_id)
        if current is None:
            raise NotFound(f"{resource_type}/{resource_id} is not known")
        if current.deleted:
            raise Gone(
                f"{resource_type}/{resource_id} was deleted",
                headers={"ETag": f'W/"{current.version_id}"'},
            )
        self.access.touched("read", resource_type, [_touched(current)])
        return current

    async def vread(self, resource_type: str, resource_id: str, version_id: str) -> StoredVersion:
        self.access.authorise("vread", resource_type, resource_id)
        number = whole_number(version_id)
        if number is None:
            raise NotFound(f"{resource_type}/{resource_id} has no version '{version_id}'")
        stored = await self.repo.version(resource_type, resource_id, number)
        if stored is None:
            raise NotFound(f"{resource_type}/{resource_id} has no version {version_id}")
        if stored.deleted:
            raise Gone(f"Version {version_id} of {resource_type}/{resource_id} is a deletion")
        self.access.touched("vread", resource_type, [_touched(stored)])
        return stored

    async def history(
        self, resource_type: str, resource_id: str | None, request: HistoryRequest
    ) -> HistoryPage:
        """One page of history, newest first; ``more`` when versions follow it."""
        interaction = "history-type" if resource_id is None else "history-instance"
        self.access.authorise(interaction, resource_type, resource_id)
        if resource_id is not None and await self.repo.current(resource_type, resource_id) is None:
            raise NotFound(f"{resource_type}/{resource_id} is not known")
        count = min(request.count, self.max_page_size)
        after = request.after
        fetched = await self.repo.history(
            resource_type,
            resource_id,
            since=request.since,
            limit=count + 1,  # one more tells whether another page follows
            after=(after.last_updated, after.resource_id, after.version_id) if after else None,
        )
        versions = list(fetched[:count])
        self.access.touched(interaction, resource_type, [_touched(v) for v in versions])
        return HistoryPage(versions, more=len(fetched) > count)

    async def search(
        self, resource_type: str, params: list[tuple[str, str]], *, lenient: bool = False
    ) -> bytes:
        """One page of a search, as a searchset Bundle."""
        request = self.search_request(
            resource_type,
            params,
            default_count=self.default_page_size,
            max_count=self.max_page_size,
            lenient=lenient,
        )
        page = await run_search(self.repo.conn, request, self.base_url, budget=self.budget)
        touched = [(resource_type, rid, content) for rid, content in page.rows]
        touched += page.included
        self.access.touched("search-type", resource_type, touched, query=urlencode(params))
        return bundles.search_result(
            base_url=self.base_url,
            resource_type=resource_type,
            page=page,
            request=request,
            now=self.clock(),
        )

    def search_request(
        self,
        resource_type: str,
        params: Sequence[tuple[str, str]],
        *,
        default_count: int,
        max_count: int,
        lenient: bool = False,
    ) -> SearchRequest:
        """Criteria a client sent, as a search that reaches only what its scopes allow: the
        one way to evaluate criteria for a client (see app/fhir/search/scoped.py)."""
        return scoped_search(
            self.access,
            resource_type,
            params,
            default_count=default_count,
            max_count=max_count,
            lenient=lenient,
        )

    # -- writes --------------------------------------------------------------------------

    async def create(
        self,
        document: Any,
        *,
        resource_type: str,
        if_none_exist: str | None = None,
        resource_id: str | None = None,
    ) -> WriteResult:
        """``resource_id`` is for a transaction Bundle, which assigns ids before it writes so
        that its entries can refer to one another; clients never choose it on create."""
        self.access.authorise("create", resource_type)
        resource_type, document = validate_resource(
            document, expected_type=resource_type, chi_system=self.chi_system
        )
        if if_none_exist is not None:
            existing = await self.conditional_match(resource_type, if_none_exist)
            if existing is not None:  # recorded as the search it was, not as a create
                return WriteResult(existing, created=False)
        new_id = resource_id or str(uuid.uuid4())
        stored = await self._write(resource_type, new_id, document, None, "create")
        self.access.touched("create", resource_type, [_touched(stored)])
        return WriteResult(stored, created=True)

    async def create_trusted(
        self, resource_type: str, documents: Sequence[dict[str, Any]]
    ) -> list[StoredVersion]:
        """Store resources the server itself made (AuditEvents), in one statement, without
        validating them again or asking the caller's access; they are indexed and versioned
        like any other. No write hooks run: a type with hooks is refused."""
        if self.hooks.watches(resource_type):
            raise ValueError(f"{resource_type} has write hooks: write it with create()")
        versions = [
            self._version(resource_type, str(uuid.uuid4()), document, 1, "create")[:2]
            for document in documents
        ]
        if versions:
            await self.repo.insert_many(versions)
        return [stored for stored, _ in versions]

    async def update(
        self,
        resource_type: str,
        resource_id: str,
        document: Any,
        *,
        if_match: int | None = None,
    ) -> WriteResult:
        self.access.authorise("update", resource_type, resource_id)
        result = await self._update(resource_type, resource_id, document, if_match, "update")
        self.access.touched("update", resource_type, [_touched(result.stored)])
        return result

    async def _update(
        self,
        resource_type: str,
        resource_id: str,
        document: Any,
        if_match: int | None,
        interaction: str,
    ) -> WriteResult:
        require_valid_id(resource_id)
        resource_type, document = validate_resource(
            document, expected_type=resource_type, chi_system=self.chi_system
        )
        body_id = document.get("id")
        if body_id is None:
            raise InvalidResource(
                "An update must carry the resource's id in the body", expression=("id",)
            )
        if body_id != resource_id:
            raise InvalidResource(
                f"The body's id '{body_id}' does not match the URL's id '{resource_id}'",
                expression=(f"{resource_type}.id",),
            )
        current = await self.repo.current(resource_type, resource_id, for_update=True)
        if current is None:
            # Update as create (FHIR's "upsert"): the caller must be allowed to create too.
            self.access.authorise("create", resource_type, resource_id)
            if if_match is not None:
                raise PreconditionFailed(
                    f"{resource_type}/{resource_id} does not exist, so If-Match cannot match"
                )
            stored = await self._write(resource_type, resource_id, document, None, interaction)
            return WriteResult(stored, created=True)
        self._check_if_match(current, if_match)
        stored = await self._write(resource_type, resource_id, document, current, interaction)
        return WriteResult(stored, created=False)

    async def patch(
        self,
        resource_type: str,
        resource_id: str,
        operations: Any,
        *,
        if_match: int | None = None,
    ) -> WriteResult:
        self.access.authorise("patch", resource_type, resource_id)
        current = await self.repo.current(resource_type, resource_id, for_update=True)
        if current is None:
            raise NotFound(f"{resource_type}/{resource_id} is not known")
        if current.deleted:
            raise Gone(f"{resource_type}/{resource_id} was deleted")
        self._check_if_match(current, if_match)
        if not isinstance(operations, list):
            raise InvalidRequest("A JSON Patch document is an array of operations")
        assert current.content is not None
        patched = _apply_patch(operations, orjson.loads(current.content))
        result = await self._update(
            resource_type, resource_id, patched, current.version_id, "patch"
        )
        self.access.touched("patch", resource_type, [_touched(result.stored)])
        return result

    async def delete(
        self, resource_type: str, resource_id: str, *, if_match: int | None = None
    ) -> StoredVersion | None:
        """Write a tombstone version; None when the resource was already deleted."""
        self.access.authorise("delete", resource_type, resource_id)
        current = await self.repo.current(resource_type, resource_id, for_update=True)
        if current is None:
            raise NotFound(f"{resource_type}/{resource_id} is not known")
        if current.deleted:
            # Already gone, whatever If-Match names: the change asked for has been made, and
            # RFC 9110 section 13.1.1 lets a retry whose first answer was lost succeed.
            self.access.touched("delete", resource_type, [(resource_type, resource_id, None)])
            return None
        self._check_if_match(current, if_match)
        watched = self.hooks.watches(resource_type) and current.content is not None
        before = orjson.loads(current.content or b"{}") if watched else None
        event = WriteEvent(self, "delete", resource_type, resource_id, before, None)
        self._derived.pop(resource_type, None)
        await self.hooks.run_before(event)
        stored = StoredVersion(
            resource_type,
            resource_id,
            current.version_id + 1,
            self.clock(),
            True,
            None,
            "DELETE",
        )
        await self._replace(stored, current, IndexRows())
        await self.hooks.run_after(event)
        # The version deleted is what the deletion touched (and names the patient).
        self.access.touched("delete", resource_type, [_touched(current)])
        return stored

    # -- internals -----------------------------------------------------------------------

    @staticmethod
    def _check_if_match(current: StoredVersion, if_match: int | None) -> None:
        if if_match is not None and if_match != current.version_id:
            raise PreconditionFailed(
                f"If-Match names version {if_match} but the current version is "
                f"{current.version_id}; read it again and reapply the change",
                headers={"ETag": f'W/"{current.version_id}"'},
            )

    async def conditional_match(
        self, resource_type: str, query: str, *, criteria: str = "If-None-Exist"
    ) -> StoredVersion | None:
        """The one current resource ``query`` matches, None for no match, 412 for several.

        A conditional create, update or reference is a search, checked as one
        (:meth:`search_request`): the caller needs the search permission on the type and on
        every type its chains and ``_has`` reach, and a match is recorded as what the search
        touched.
        ``criteria`` names where the query came from, for the error messages.
        """
        params = parse_qsl(query.lstrip("?"), keep_blank_values=True)
        if not params:
            self.access.authorise("search-type", resource_type)
            raise InvalidRequest(f"{criteria} holds no search parameters")
        request = self.search_request(resource_type, params, default_count=2, max_count=2)
        request.count = 2
        # Concurrent retries of the same conditional create must not both create.
        await self.repo.lock(f"{resource_type}?{sorted(request.canonical)}")
        page = await run_search(self.repo.conn, request, self.base_url)
        if len(page.rows) > 1:
            raise MultipleMatches(
                f"{criteria} matches more than one {resource_type}; make the criteria "
                "more selective"
            )
        if not page.rows:
            return None
        match = await self.repo.current(resource_type, page.rows[0][0])
        if match is not None:
            self.access.touched(
                "search-type", resource_type, [_touched(match)], query=query.lstrip("?")
            )
        return match

    async def _write(
        self,
        resource_type: str,
        resource_id: str,
        document: dict[str, Any],
        current: StoredVersion | None,
        interaction: str,
    ) -> StoredVersion:
        before = None
        if (
            current is not None
            and current.content is not None
            and self.hooks.watches(resource_type)
        ):
            before = orjson.loads(current.content)
        event = WriteEvent(self, interaction, resource_type, resource_id, before, document)
        self._derived.pop(resource_type, None)
        await self.hooks.run_before(event)
        document = event.after or document
        version_id = 1 if current is None else current.version_id + 1
        stored, index, served = self._version(
            resource_type, resource_id, document, version_id, interaction
        )
        if current is None:
            await self.repo.insert_new(stored, index)
        else:
            await self._replace(stored, current, index)
        event.after = served
        await self.hooks.run_after(event)
        return stored

    def _version(
        self,
        resource_type: str,
        resource_id: str,
        document: dict[str, Any],
        version_id: int,
        interaction: str,
    ) -> tuple[StoredVersion, IndexRows, dict[str, Any]]:
        """A version as stored and served (its id, and meta set by the server) and its index
        rows."""
        now = self.clock()
        meta = dict(document.get("meta") or {})
        meta["versionId"] = str(version_id)
        meta["lastUpdated"] = instant(now)
        if self.access.source is not None:
            meta["source"] = self.access.source
        body = {k: v for k, v in document.items() if k not in ("resourceType", "id", "meta")}
        served = {"resourceType": resource_type, "id": resource_id, "meta": meta, **body}
        stored = StoredVersion(
            resource_type,
            resource_id,
            version_id,
            now,
            False,
            orjson.dumps(served),
            _HTTP_METHODS.get(interaction, "PUT"),
        )
        return stored, index_rows(resource_type, served, self.base_url), served

    async def _replace(
        self, stored: StoredVersion, current: StoredVersion, index: IndexRows
    ) -> None:
        if not await self.repo.replace(stored, index, previous_version=current.version_id):
            raise PreconditionFailed(
                f"{stored.resource_type}/{stored.id} was changed by another request; "
                "read it again and reapply the change"
            )


def _apply_patch(operations: list[Any], document: dict[str, Any]) -> Any:
    """``document`` with the JSON Patch applied, one operation at a time so that an error
    can name the operation. jsonpatch's own messages quote the document (a patient's name and
    NHS number): they never reach the client."""
    for index, operation in enumerate(operations):
        shown = (
            f"operation {index} ({operation.get('op')} {operation.get('path')})"
            if isinstance(operation, dict)
            else f"operation {index}"
        )
        try:
            document = jsonpatch.JsonPatch([operation]).apply(document)
        except (jsonpatch.InvalidJsonPatch, TypeError, AttributeError, KeyError) as error:
            raise InvalidRequest(
                f"The JSON Patch is malformed at {shown}: each operation needs 'op', 'path' "
                "and what that op takes ('value', or 'from')"
            ) from error
        except jsonpatch.JsonPatchTestFailed as error:
            raise BusinessRuleViolation(
                f"The JSON Patch's {shown} failed: the value there is not the one tested"
            ) from error
        except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as error:
            raise BusinessRuleViolation(
                f"The JSON Patch's {shown} cannot be applied: its path does not exist in the "
                "resource, or names an array index out of range"
            ) from error
    return document


def _touched(stored: StoredVersion) -> Touched:
    return (stored.resource_type, stored.id, stored.content)
