"""What answering one request may cost: one budget per request, shared by every entry of a
batch or transaction and by a search and its _include/_revinclude.

Two figures bound it. The resources a request may ask for are counted before anything is read,
from what each entry asks (a search's page size, plus the most its includes may add; one
resource for any other entry), so ``GET Task?_count=500&_include=Task:*`` a thousand times over
is refused before the first query. The bytes of the answer are counted as the resources are
read, so a request whose resources turn out large stops there, before its response is built,
rather than holding a body of hundreds of megabytes.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.fhir.errors import PayloadTooLarge, TooCostly

#: What a Bundle entry adds around the resource it carries (fullUrl, search or response
#: elements), counted with each resource so the bytes counted are about what is sent.
ENTRY_OVERHEAD_BYTES = 200


class ResponseTooCostly(TooCostly):
    """The answer would pass the request's byte budget. A batch entry's other failures are
    its own; this one ends the whole request (nothing of it is kept)."""


@dataclass
class RequestBudget:
    #: The most resources one request may ask for (WAYMARK_MAX_REQUEST_RESOURCES).
    max_resources: int
    #: The most bytes of resources one answer may carry (WAYMARK_MAX_RESPONSE_BYTES).
    max_bytes: int
    #: Bytes of resources read for the answer so far.
    used_bytes: int = 0

    @classmethod
    def unlimited(cls) -> RequestBudget:
        """For the server's own work (hooks, jobs): no client asked for it."""
        return cls(max_resources=2**62, max_bytes=2**62)

    def plan(self, planned: int, *, what: str, bundle: bool = False) -> None:
        """Refuse, before anything is read, a request that may read more than the budget:
        413 for a Bundle (its content asks too much), 400 too-costly for a search."""
        if planned > self.max_resources:
            refusal = PayloadTooLarge if bundle else TooCostly
            raise refusal(
                f"{what} may read up to {planned} resources; this server answers at most "
                f"{self.max_resources} per request (WAYMARK_MAX_REQUEST_RESOURCES). Ask for "
                "fewer per search (_count, fewer _include/_revinclude)"
                + (" or split the Bundle" if bundle else "")
            )

    def charge(self, size: int) -> None:
        """Count ``size`` bytes read for the answer; refuse once the budget is passed."""
        self.used_bytes += size + ENTRY_OVERHEAD_BYTES
        if self.used_bytes > self.max_bytes:
            raise ResponseTooCostly(
                f"The answer would carry more than {self.max_bytes} bytes of resources "
                f"(WAYMARK_MAX_RESPONSE_BYTES); {self.used_bytes} were reached before "
                "reading stopped. Ask for fewer per search (_count, fewer _include/"
                "_revinclude) or split the request"
            )


def planned_search(count: int, *, includes: bool, summary_count: bool, max_included: int) -> int:
    """The most resources one search page may read: its matches, and what its includes may
    add (at most ``max_included`` a page, whatever the includes)."""
    if summary_count:
        return 0
    return count + (max_included if includes else 0)
