"""Where AuditEvents are written when no request transaction carries them: group commit.

A write request's AuditEvents commit in its own transaction, with the write. A read has no
transaction worth the name (one statement, in autocommit), and giving it one just for its
AuditEvent made every read a write transaction of its own: a commit, and so a WAL flush on
PostgreSQL and the single writer's lock on SQLite, per read. Here the AuditEvents of reads,
and of refused or failed requests, join the next batch: one transaction and one multi-row
statement for every request that arrived while the previous batch was being written. A caller
waits until its batch has committed, so no response leaves before its AuditEvent is stored;
if the batch fails, every caller in it gets the error (nothing is answered unaudited).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.db import transaction
from app.fhir.store import FhirStore

#: Most AuditEvents in one statement: a busy moment is written in several batches.
MAX_BATCH = 500
#: A caller's AuditEvents, and what it waits on until they are committed.
_Waiting = tuple[list[dict[str, Any]], asyncio.Future[None]]


class AuditTrail:
    def __init__(self, engine: AsyncEngine, store: Callable[[AsyncConnection], FhirStore]) -> None:
        self._engine = engine
        self._store = store
        self._waiting: list[_Waiting] = []
        self._writer: asyncio.Task[None] | None = None
        #: Refusals and failures whose AuditEvent could not be written (app/api/access.py,
        #: record_failure): a counter for monitoring, beside the error logged for each.
        self.unrecorded = 0

    async def write(self, documents: list[dict[str, Any]]) -> None:
        """Store ``documents`` (AuditEvents) with the next batch; return once committed."""
        if not documents:
            return
        done = asyncio.get_running_loop().create_future()
        self._waiting.append((documents, done))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_batches())
        await done

    async def _write_batches(self) -> None:
        while self._waiting:
            batch = self._take_batch()
            try:
                async with transaction(self._engine, write=True) as conn:
                    documents = [document for documents, _ in batch for document in documents]
                    await self._store(conn).create_trusted("AuditEvent", documents)
            except BaseException as error:  # each caller answers with it; none goes unaudited
                for _, done in batch:
                    if not done.done():
                        done.set_exception(error)
                if not isinstance(error, Exception):
                    raise
                continue
            for _, done in batch:
                if not done.done():
                    done.set_result(None)

    def _take_batch(self) -> list[_Waiting]:
        batch: list[_Waiting] = []
        count = 0
        while self._waiting and (not batch or count + len(self._waiting[0][0]) <= MAX_BATCH):
            item = self._waiting.pop(0)
            batch.append(item)
            count += len(item[0])
        return batch
