"""Search criteria evaluated for a client, checked against its scopes before anything is read.

:func:`scoped_search` is the one way criteria sent by a client become a
:class:`~app.fhir.search.parse.SearchRequest`: a search (GET or POST ``_search``, a batch or
transaction entry), a conditional create (``If-None-Exist``), a conditional update, a
conditional reference in a Bundle, and whatever evaluates criteria next on a client's behalf
(a Subscription's criteria, a Measure's subject filter). Each of those tells the client
something about the resources its criteria reach, if only "one matched" (200 rather than 201,
412 rather than 201): so each needs the same scopes a search would.

The store's own rules search through ``FhirStore.find``, which checks nothing: the server
reads for itself there, and what it answers is its own to decide.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from app.fhir.access import Access
from app.fhir.errors import Forbidden
from app.fhir.resources import SERVED
from app.fhir.search.parse import Criterion, Include, SearchRequest, parse_search
from app.fhir.search.registry import parameters_for


def scoped_search(
    access: Access,
    resource_type: str,
    params: Sequence[tuple[str, str]],
    *,
    default_count: int,
    max_count: int,
    lenient: bool = False,
) -> SearchRequest:
    """``params`` parsed into a search of ``resource_type`` that reaches only what the
    caller's scopes allow, decided from the request and the scopes alone (never from data,
    so that a refusal cannot tell whether anything would have matched):

    - the type searched needs the search permission (``system/Type.s``);
    - a chain (``subject.name``) searches the types its reference may point at: it keeps
      those the caller may search and is refused (403) when there is none;
    - ``_has:Type:...`` searches ``Type``: refused without the search permission on it;
    - ``_include=Type:param[:Target]`` (and ``:iterate``, and ``Type:*``) reads the resources
      the references point at: it keeps the target types the caller may read (``:Target``
      narrowing them first) and is refused when there is none, as a chain is;
    - ``_revinclude=Type:param`` (and ``:iterate``, and ``Type:*``) finds ``Type`` resources
      by what they refer to and returns them: it needs both the read and the search permission
      on ``Type``, and is refused without them.

    ``Forbidden`` is raised before the search runs; parse errors are as ``parse_search``
    raises them.
    """
    access.authorise("search-type", resource_type)
    request = parse_search(
        resource_type, params, default_count=default_count, max_count=max_count, lenient=lenient
    )
    request.criteria = [_criterion_within(access, c) for c in request.criteria]
    request.includes = [_include_within(access, i) for i in request.includes]
    return request


def _criterion_within(access: Access, criterion: Criterion) -> Criterion:
    if criterion.has is not None:
        referring_type, reference, inner = criterion.has
        access.authorise("search-type", referring_type)
        criterion = replace(
            criterion, has=(referring_type, reference, _criterion_within(access, inner))
        )
    if criterion.chain is None:
        return criterion
    targets, inner = criterion.chain
    allowed = tuple(t for t in targets if access.permits("search-type", t))
    if not allowed:
        raise Forbidden(
            f"The chained parameter '{criterion.param.code}' searches {', '.join(targets)}: "
            "the access token allows searching none of them"
        )
    return replace(criterion, chain=(allowed, _criterion_within(access, inner)))


def _include_within(access: Access, include: Include) -> Include:
    name = "_revinclude" if include.reverse else "_include"
    shown = f"{name}={include.source_type}:{include.param}"
    if include.reverse:
        for interaction in ("read", "search-type"):
            if not access.permits(interaction, include.source_type):
                raise Forbidden(
                    f"{shown} finds and returns {include.source_type} resources: the access "
                    f"token needs read and search on {include.source_type} "
                    f"(system/{include.source_type}.rs)"
                )
        return include
    reachable = include_targets(include)
    if not reachable:  # a :Target this server does not serve: nothing to read
        return include
    allowed = tuple(t for t in reachable if access.permits("read", t))
    if not allowed:
        raise Forbidden(
            f"{shown} reads {', '.join(reachable)}: the access token allows reading none of them"
        )
    return include if allowed == reachable else replace(include, targets=allowed)


def include_targets(include: Include) -> tuple[str, ...]:
    """The served types a forward ``_include`` may bring in, from the definitions of its
    reference parameters (any served type where a definition does not restrict them)."""
    if include.targets is not None:
        return include.targets
    definitions = parameters_for(include.source_type)
    if include.param == "*":
        references = [p for p in definitions.values() if p.type == "reference"]
    else:
        references = [definitions[include.param]]
    if include.target_type is not None:
        return (include.target_type,) if include.target_type in SERVED else ()
    if any(not p.targets for p in references):
        return tuple(sorted(SERVED))
    return tuple(sorted({t for p in references for t in p.targets if t in SERVED}))
