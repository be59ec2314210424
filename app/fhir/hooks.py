"""Write hooks: how domain rules (app/pathway) join a write without app/fhir knowing them.

A hook runs inside the write's transaction. A ``before`` hook may change the incoming document
or refuse the write by raising a :class:`~app.fhir.errors.FhirError`; an ``after`` hook may write
other resources through the same store. Either way, everything commits together or not at all.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from app.fhir.store import FhirStore


@dataclass
class WriteEvent:
    store: FhirStore
    interaction: str  # create | update | patch | delete
    resource_type: str
    resource_id: str
    before: dict[str, Any] | None  # the current version, None on create
    after: dict[str, Any] | None  # the new version, None on delete
    #: What a ``before`` hook found, for the ``after`` hooks of the same write.
    context: dict[str, Any] = field(default_factory=dict)


Hook = Callable[[WriteEvent], Awaitable[None]]


class WriteHooks:
    def __init__(self) -> None:
        self._before: defaultdict[str, list[Hook]] = defaultdict(list)
        self._after: defaultdict[str, list[Hook]] = defaultdict(list)

    def before(self, resource_type: str, hook: Hook) -> None:
        self._before[resource_type].append(hook)

    def after(self, resource_type: str, hook: Hook) -> None:
        self._after[resource_type].append(hook)

    def watches(self, resource_type: str) -> bool:
        return bool(self._before.get(resource_type) or self._after.get(resource_type))

    async def run_before(self, event: WriteEvent) -> None:
        for hook in self._before.get(event.resource_type, ()):
            await hook(event)

    async def run_after(self, event: WriteEvent) -> None:
        for hook in self._after.get(event.resource_type, ()):
            await hook(event)
