"""What a worker knows of the registered clients, read again at most every few seconds.

Every token request and every FHIR request asks about its client (is it registered, enabled,
were its tokens revoked?). Reading the registry each time would add a query to every request;
remembering forever would let a disabled client go on until its token expires. So each answer
is remembered for ``fresh_for`` (WAYMARK_CLIENT_CHECK_SECONDS): disabling or removing a client
takes effect on every worker within that time. Unknown names are remembered too, so a caller
inventing names costs one query per name per interval, in a bounded map.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from app.clock import Clock
from app.db import transaction
from app.security.clients import Client, ClientRepository

_MAX_REMEMBERED = 4096


class ClientDirectory:
    def __init__(self, engine: AsyncEngine, *, clock: Clock, fresh_for: timedelta) -> None:
        self._engine = engine
        self._clock = clock
        self._fresh_for = fresh_for
        self._read: dict[str, tuple[Client | None, datetime]] = {}

    async def get(self, client_id: str) -> Client | None:
        """The client registered as ``client_id`` (None if none), as read lately."""
        now = self._clock()
        remembered = self._read.get(client_id)
        if remembered is not None and now - remembered[1] < self._fresh_for:
            return remembered[0]
        # A short read of its own: no transaction of the caller's is held meanwhile.
        async with transaction(self._engine, write=False) as conn:
            client = await ClientRepository(conn).get(client_id)
        if len(self._read) >= _MAX_REMEMBERED:
            self._read = {k: v for k, v in self._read.items() if now - v[1] < self._fresh_for}
            if len(self._read) >= _MAX_REMEMBERED:
                self._read.clear()
        self._read[client_id] = (client, now)
        return client

    def forget(self) -> None:
        """Read every client afresh next time (after a change made by this process)."""
        self._read.clear()
