"""Waiting clocks, computed from a referral's timeline.

The clock starts when the receiving service has the referral (the first move to received,
accepted, ready or in-progress), stops at the first treatment (in-progress) or when the referral
is closed without it (rejected, cancelled, failed, entered in error, completed untreated), and
pauses while the referral is on hold for a reason the person owns. Both the plain wait and the
wait without paused time are given, because the standards differ on which to report
(DOMAIN.md).

Two figures count from the referral itself rather than from the clock start, because a gate
can hold a referral before the service ever receives it, and that time would otherwise show
nowhere: the time since the referral was made, and the time it spent held by gates.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

_STARTS = frozenset({"received", "accepted", "ready", "in-progress"})
_CLOSES = frozenset({"rejected", "cancelled", "failed", "completed", "entered-in-error"})
HELD_BY_GATE = "held-by-gate"


@dataclass(frozen=True, slots=True)
class Clock:
    referred: datetime | None  # the referral's first event
    started: datetime | None
    stopped: datetime | None  # first treatment, or closure without it; None while waiting
    ended_by: str | None  # treatment | closure
    waited: timedelta  # start to stop (or to ``now``)
    paused: timedelta  # on hold for reasons the person owns, within that span
    since_referral: timedelta  # referral to stop (or to ``now``)
    held_by_gates: timedelta  # on hold by a gate, referral to stop (or to ``now``)

    @property
    def waited_without_pauses(self) -> timedelta:
        return self.waited - self.paused

    @property
    def still_waiting(self) -> bool:
        return self.stopped is None


def waiting_clock(events: Sequence[Any], now: datetime) -> Clock:
    """``events``: timeline rows in order (``at``, ``to_status``, ``business_status``,
    ``pauses_clock``)."""
    started = stopped = ended_by = None
    for event in events:
        if started is None and event.to_status in _STARTS:
            started = event.at
        if event.to_status == "in-progress":
            stopped, ended_by = event.at, "treatment"
            break
        if event.to_status in _CLOSES:
            stopped, ended_by = event.at, "closure"
            break
    end = stopped or now
    referred = events[0].at if events else None
    return Clock(
        referred=referred,
        started=started,
        stopped=stopped,
        ended_by=ended_by,
        waited=end - started if started is not None else timedelta(),
        paused=_time_in(events, _pauses, since=started, end=end),
        since_referral=end - referred if referred is not None else timedelta(),
        held_by_gates=_time_in(events, held_by_gate_event, since=referred, end=end),
    )


def _pauses(event: Any) -> bool:
    return bool(event.pauses_clock)


def held_by_gate_event(event: Any) -> bool:
    """The timeline ``event`` put (or kept) the referral on hold by a gate."""
    return bool(event.to_status == "on-hold" and event.business_status == HELD_BY_GATE)


def _time_in(
    events: Sequence[Any],
    state: Callable[[Any], bool],
    *,
    since: datetime | None,
    end: datetime,
) -> timedelta:
    """The time from ``since`` to ``end`` spent in events for which ``state`` holds: each
    event lasts until the next one."""
    total = timedelta()
    if since is None:
        return total
    for event, following in zip(events, [*events[1:], None], strict=True):
        begins = max(event.at, since)
        finishes = min(following.at if following is not None else end, end)
        if state(event) and finishes > begins:
            total += finishes - begins
    return total
