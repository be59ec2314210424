"""Bounds on the work anonymous callers can cause at the token endpoint, per worker process.

Two bounds, both in memory (each worker keeps its own, so N workers allow N times as much):

- :class:`FailureLimiter`: failed client assertions per client name and over all clients, as
  token buckets. Once a bucket is empty, token requests for that client (or for all, when the
  global one is) are refused with 429 and the seconds until the next is accepted, before any
  key is fetched or signature checked. Only failures that cost something count: those of a
  registered client (a bad signature, an unknown kid, a dead JWKS URL, a replay).
- :class:`Admission`: how many token requests are worked on at once; more are refused at
  once (503), so a flood cannot queue up behind a slow JWKS URL.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from app.clock import Clock


class Throttled(Exception):
    """Refused for now; ``retry_after`` is whole seconds; ``busy`` if for lack of room rather
    than for failures."""

    def __init__(self, retry_after: int, *, busy: bool = False) -> None:
        super().__init__(f"retry after {retry_after} s")
        self.retry_after = retry_after
        self.busy = busy


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class FailureLimiter:
    """At most ``per_client`` failures per client name and ``overall`` failures in all per
    ``window_seconds``, refilled steadily (a token bucket of that capacity)."""

    _GLOBAL = ""  # not a client name: names start with a letter or digit

    def __init__(
        self, *, clock: Clock, per_client: int, overall: int, window_seconds: float
    ) -> None:
        self._clock = clock
        self._capacity = {self._GLOBAL: float(overall)}
        self._per_client = float(per_client)
        self._window = window_seconds
        self._buckets: dict[str, _Bucket] = {}

    def check(self, client_id: str) -> None:
        """Raise :class:`Throttled` if the client, or everyone, has failed too often lately."""
        waits = [self._wait(key) for key in (self._GLOBAL, client_id)]
        if max(waits) > 0:
            raise Throttled(max(1, math.ceil(max(waits))))

    def failed(self, client_id: str) -> None:
        for key in (self._GLOBAL, client_id):
            bucket = self._refilled(key)
            bucket.tokens = max(bucket.tokens - 1, -1.0)

    def _capacity_of(self, key: str) -> float:
        return self._capacity.get(key, self._per_client)

    def _wait(self, key: str) -> float:
        """Seconds until the bucket holds a whole token again (0 if it does)."""
        if key not in self._buckets:
            return 0.0
        bucket = self._refilled(key)
        missing = 1 - bucket.tokens
        return 0.0 if missing <= 0 else missing * self._window / self._capacity_of(key)

    def _refilled(self, key: str) -> _Bucket:
        now = self._clock().timestamp()
        capacity = self._capacity_of(key)
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) > 10_000:  # clients are few; a bound, not a policy
                self._buckets = {k: b for k, b in self._buckets.items() if k == self._GLOBAL}
            bucket = self._buckets[key] = _Bucket(capacity, now)
        elapsed = max(now - bucket.updated, 0.0)
        bucket.tokens = min(capacity, bucket.tokens + elapsed * capacity / self._window)
        bucket.updated = now
        return bucket


class Admission:
    """At most ``limit`` token requests in work at once; one more is refused, not queued."""

    def __init__(self, limit: int, *, retry_after: int = 1) -> None:
        self._limit = limit
        self._busy = 0
        self._retry_after = retry_after

    @asynccontextmanager
    async def admitted(self) -> AsyncIterator[None]:
        # One event loop per worker: nothing else runs between the test and the increment.
        if self._busy >= self._limit:
            raise Throttled(self._retry_after, busy=True)
        self._busy += 1
        try:
            yield
        finally:
            self._busy -= 1
