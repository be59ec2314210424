"""A client's public keys: the registered JWKS, or the one at its URL, fetched sparingly.

Fetching a client's JWKS is the one piece of a token request that waits on someone else's
server, and it happens before the caller is known, so an anonymous caller decides when it
runs. It is therefore bounded every way: one fetch at a time per URL (concurrent requests
share it), a short overall timeout, a size limit, successes cached for minutes, failures
cached with a growing back-off (so a dead URL is asked once per back-off, not once per
request), and no database transaction held while it runs (the caller holds none).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx
from joserfc.jwk import KeySet

from app.clock import Clock
from app.security.clients import Client, ClientRegistryError, parse_jwks

log = logging.getLogger("waymark.security")


class KeysUnavailable(Exception):
    """A client's public keys could not be had (its JWKS URL failed or served no usable key).

    The message is for the server's log: it is never shown to the caller.
    """


@dataclass(slots=True)
class _Fetched:
    keys: KeySet | None  # the keys last fetched (None: no fetch has succeeded)
    at: datetime  # when they were fetched
    failed_at: datetime | None = None  # when the latest fetch failed, if it did
    backoff: timedelta = timedelta(0)  # how long that failure is remembered


class ClientKeys:
    """A client's keys. A client that rotates its keys publishes the new one at its URL before
    using it; an assertion naming a ``kid`` not in the cached copy makes one early refetch, at
    most one per ``refetch_after``, so assertions with made-up kids cannot hammer the URL.
    """

    def __init__(
        self,
        *,
        clock: Clock,
        transport: httpx.AsyncBaseTransport | None = None,
        cache_for: timedelta = timedelta(minutes=5),
        refetch_after: timedelta = timedelta(seconds=10),
        first_backoff: timedelta = timedelta(seconds=10),
        longest_backoff: timedelta = timedelta(minutes=2),
        timeout_seconds: float = 3.0,
        max_bytes: int = 256 * 1024,
    ) -> None:
        self._clock = clock
        self._transport = transport
        self._cache_for = cache_for
        self._refetch_after = refetch_after
        self._first_backoff = first_backoff
        self._longest_backoff = longest_backoff
        self._timeout_seconds = timeout_seconds
        self._max_bytes = max_bytes
        self._fetched: dict[str, _Fetched] = {}
        self._in_flight: dict[str, asyncio.Future[KeySet]] = {}

    async def key_set(self, client: Client, *, kid: str) -> KeySet:
        """The client's keys, refetched from its URL when stale or when none has ``kid``."""
        if client.jwks is not None:
            try:
                return parse_jwks(client.jwks, strict=False)
            except ClientRegistryError as error:  # only if edited by hand: registration checks
                message = f"the registered JWKS of client {client.client_id} is unusable"
                raise KeysUnavailable(message) from error
        if client.jwks_url is None:
            raise KeysUnavailable(f"client {client.client_id} has no keys registered")
        url, now = client.jwks_url, self._clock()
        cached = self._fetched.get(url)
        if cached is not None:
            failing = cached.failed_at is not None and now - cached.failed_at < cached.backoff
            age = now - cached.at
            if cached.keys is not None and age < self._cache_for:
                # Fresh keys serve, unless the kid is new and a refetch is allowed now.
                has_kid = any(key.kid == kid for key in cached.keys)
                if has_kid or failing or age < self._refetch_after:
                    return cached.keys
            elif failing:
                raise KeysUnavailable(f"the JWKS of client {client.client_id} failed lately")
        return await self._shared_fetch(client.client_id, url)

    async def _shared_fetch(self, client_id: str, url: str) -> KeySet:
        """One fetch per URL at a time: a request arriving during a fetch waits for its end."""
        running = self._in_flight.get(url)
        if running is None:
            running = asyncio.ensure_future(self._fetch_and_remember(client_id, url))
            self._in_flight[url] = running
            running.add_done_callback(lambda _done: self._in_flight.pop(url, None))
        # A caller that goes away (a closed connection) must not cancel the others' fetch.
        return await asyncio.shield(running)

    async def _fetch_and_remember(self, client_id: str, url: str) -> KeySet:
        if len(self._fetched) > 1000:  # a bound, not an eviction policy: clients are few
            self._fetched.clear()
        previous = self._fetched.get(url)
        try:
            keys = await self._fetch(url)
        except (httpx.HTTPError, ClientRegistryError, TimeoutError) as error:
            now = self._clock()
            backoff = self._first_backoff
            if previous is not None and previous.failed_at is not None:  # failing again
                backoff = min(previous.backoff * 2, self._longest_backoff)
            # Keys fetched before still serve until they go stale: a failed refetch (for a
            # made-up kid, say) must not lock the client out.
            kept, at = (previous.keys, previous.at) if previous is not None else (None, now)
            self._fetched[url] = _Fetched(kept, at, failed_at=now, backoff=backoff)
            log.warning(
                "JWKS fetch failed for client %s (%s); not retried for %d s",
                client_id,
                type(error).__name__,
                int(backoff.total_seconds()),
            )
            raise KeysUnavailable(f"the JWKS fetch of client {client_id} failed") from error
        self._fetched[url] = _Fetched(keys, self._clock())
        return keys

    async def _fetch(self, url: str) -> KeySet:
        # httpx's timeout bounds each read; the outer one bounds a server that drips bytes.
        async with asyncio.timeout(self._timeout_seconds):
            async with (
                httpx.AsyncClient(
                    transport=self._transport,
                    timeout=httpx.Timeout(self._timeout_seconds),
                    follow_redirects=False,
                ) as http,
                http.stream("GET", url, headers={"Accept": "application/json"}) as response,
            ):
                response.raise_for_status()
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > self._max_bytes:
                        raise ClientRegistryError("the JWKS document is too large")
        return parse_jwks(bytes(body), strict=False)
