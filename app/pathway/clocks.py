"""Waiting clocks, computed from a referral's timeline.

The clock starts when the receiving service has the referral (the first move to received,
accepted, ready or in-progress), stops at the first treatment (in-progress), and pauses while
the referral is on hold for a reason the person owns. Both the plain wait and the wait without
paused time are given, because the standards differ on which to report (DOMAIN.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

_STARTS = frozenset({"received", "accepted", "ready", "in-progress"})


@dataclass(frozen=True, slots=True)
class Clock:
    started: datetime | None
    stopped: datetime | None  # first treatment; None while still waiting
    waited: timedelta  # start to stop (or to ``now``)
    paused: timedelta  # on hold for reasons the person owns, within that span

    @property
    def waited_without_pauses(self) -> timedelta:
        return self.waited - self.paused


def waiting_clock(events: Sequence[Any], now: datetime) -> Clock:
    """``events``: timeline rows in order (``at``, ``to_status``, ``pauses_clock``)."""
    started = stopped = paused_since = None
    paused = timedelta()
    for event in events:
        if started is None and event.to_status in _STARTS:
            started = event.at
        if started is None or stopped is not None:
            continue
        if paused_since is not None and not event.pauses_clock:
            paused += event.at - paused_since
            paused_since = None
        if event.pauses_clock and paused_since is None:
            paused_since = event.at
        if event.to_status == "in-progress":
            stopped = event.at
    end = stopped or now
    if paused_since is not None and stopped is None:
        paused += end - paused_since
    waited = end - started if started is not None else timedelta()
    return Clock(started, stopped, waited, paused)
