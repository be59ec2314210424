"""Referral throughput (issue 5): ``python -m bench.referrals``.

On a fresh PostgreSQL database (migrated, ``waymark seed-demo``), one server (uvicorn,
``--workers 2``, ``WAYMARK_AUTH=off`` on loopback: issue 4's benchmark measures tokens) and
``wrk`` at ``--connections 32``, interleaving three scenarios:

* ``plain``       POST /ServiceRequest: the referral's JSON without its category 3457005, so it
                  is no referral and no pathway rule acts: the baseline
* ``referral``    POST /ServiceRequest, a referral from a GP practice (Solway Harbour, through
                  a PractitionerRole) to the drug and alcohol team (solway-dat, a route no
                  abstinence gate guards): ServiceRequest + Task + timeline + audit, one
                  transaction; each request for a new patient
* ``transition``  PATCH /Task/{id} (JSON Patch status requested -> received, If-Match W/"1")
                  of a referral's Task, each Task once

Patients are bulk-loaded (:mod:`bench.bulk`) before each run that needs them, enough for
``--max-rate`` referrals a second at first and twice the fastest rate seen after; the
Tasks moved are those of the referral runs, topped up (referrals posted unmeasured) when too
few are left. Target (PostgreSQL, 2 workers): referral and transition at least 0.60 of plain.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
from collections.abc import Sequence
from typing import Any

import asyncpg
import orjson

from bench import bulk, crud, loadrun
from bench.crud import Run, Scenario
from bench.loadrun import Files, Plan

TARGET = 0.60
REFERRAL_CODE = ("417096006", "Referral to community drug and alcohol team")
PATCH = b'[{"op":"replace","path":"/status","value":"received"}]'

SCENARIOS = (
    Scenario("plain", "plain SR create", "create_each.lua", ("path", "ids", "template", "token")),
    Scenario(
        "referral",
        "create-referral",
        "create_each.lua",
        ("path", "ids", "template", "token"),
        "plain",
        TARGET,
    ),
    Scenario(
        "transition",
        "Task transition",
        "transition.lua",
        ("tasks", "patch", "token"),
        "plain",
        TARGET,
    ),
)


class Rates:
    """The fastest 2xx rate seen per scenario, so each run gets enough inputs."""

    def __init__(self, first_guess: float) -> None:
        self.first_guess = first_guess
        self.best: dict[str, float] = {}

    def need(self, scenario: str, seconds: int, guess: float | None = None) -> int:
        rate = self.best.get(scenario, guess or self.first_guess)
        return math.ceil(2 * rate * seconds) + 500

    def note(self, run: Run) -> None:
        self.best[run.scenario] = max(self.best.get(run.scenario, 0.0), run.ok_rps)


async def requested_tasks(dsn: str, service_id: str) -> list[str]:
    """Referral Tasks to that service still at requested, never moved (version 1)."""
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        rows = await conn.fetch(
            "SELECT task_id FROM referral WHERE to_service_id = $1 AND status = 'requested' "
            "ORDER BY created_at",
            service_id,
        )
        return [row[0] for row in rows]
    finally:
        await conn.close()


async def counts(dsn: str) -> dict[str, int]:
    """Rows of what a referral writes, to say what one costs in rows."""
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        found = {
            f"resource {r[0]}": r[1]
            for r in await conn.fetch(
                "SELECT resource_type, count(*) FROM resource WHERE resource_type IN "
                "('ServiceRequest', 'Task', 'AuditEvent', 'Patient') GROUP BY 1 ORDER BY 1"
            )
        }
        for table in ("resource_version", "referral", "referral_event", "gate_decision"):
            found[table] = await conn.fetchval(f"SELECT count(*) FROM {table}")
        return found
    finally:
        await conn.close()


class Bench:
    """The state of one run: the server, who is referred where, the inputs left."""

    def __init__(self, options: argparse.Namespace, server: crud.Server, url: str) -> None:
        self.options = options
        self.server = server
        self.dsn = loadrun.dsn(url)
        self.rates = Rates(options.max_rate)
        with loadrun.client(server.base_url) as http:
            gp = loadrun.service(http, "solway-gp1")
            self.dat = loadrun.service(http, "solway-dat")["id"]
            self.role = loadrun.role_for(http, gp["id"])
            gp_org = gp["providedBy"]["reference"].split("/")[-1]
        work = loadrun.WORK_DIR
        self.people = bulk.People(self.dsn, gp_org=gp_org, nhs_base=620_000_000)
        self.files = {
            "referral": work / "referral.json.tmpl",
            "plain": work / "plain-sr.json.tmpl",
            "patch": work / "task-received.json",
        }
        for name, is_referral in (("referral", True), ("plain", False)):
            document = loadrun.referral(
                requester_role=self.role,
                performer=self.dat,
                code=REFERRAL_CODE,
                is_referral=is_referral,
            )
            self.files[name].write_bytes(orjson.dumps(document))
        self.files["patch"].write_bytes(PATCH)
        self.plain_people: list[str] = []
        self.topped_up = 0

    def _args(self, **paths: str) -> Files:
        return Files({"token": "-", "path": "/ServiceRequest", **paths})

    def prepare_plain(self, seconds: int) -> Files:
        # A plain ServiceRequest is refused for nobody: the same people serve every run.
        need = min(self.rates.need("plain", seconds), 20_000)
        if len(self.plain_people) < need:
            self.plain_people += self.people.take(need - len(self.plain_people))
        prefix = str(loadrun.WORK_DIR / "plain-ids")
        bulk.write_lists(self.plain_people, prefix, self.options.threads)
        return self._args(ids=prefix, template=str(self.files["plain"]))

    def prepare_referral(self, seconds: int) -> Files:
        prefix = str(loadrun.WORK_DIR / "referral-ids")
        people = self.people.take(self.rates.need("referral", seconds))
        bulk.write_lists(people, prefix, self.options.threads)
        return self._args(ids=prefix, template=str(self.files["referral"]))

    def prepare_transition(self, seconds: int) -> Files:
        # Before its first run, guess: a transition costs less than a referral.
        guess = 3 * self.rates.best["referral"] if "referral" in self.rates.best else None
        need = self.rates.need("transition", seconds, guess)
        tasks = asyncio.run(requested_tasks(self.dsn, self.dat))
        while len(tasks) < need:
            self._top_up(need - len(tasks))
            tasks = asyncio.run(requested_tasks(self.dsn, self.dat))
        prefix = str(loadrun.WORK_DIR / "task-ids")
        bulk.write_lists(tasks[:need], prefix, self.options.threads)
        return Files({"tasks": prefix, "patch": str(self.files["patch"]), "token": "-"})

    def _top_up(self, missing: int) -> None:
        """Referrals made unmeasured, so that the next transition run has Tasks enough."""
        print(f"   (making {missing:,} more referrals to move, unmeasured)", flush=True)
        seconds, statuses, error = asyncio.run(
            loadrun.post_each(
                self.server.base_url,
                "/ServiceRequest",
                self.files["referral"].read_bytes(),
                self.people.take(missing),
                concurrency=self.options.connections,
            )
        )
        self.topped_up += statuses.get(201, 0)
        print(f"   (made {statuses.get(201, 0):,} in {seconds} s)", flush=True)
        if set(statuses) != {201}:
            raise crud.BenchError(f"making referrals: {statuses}; first error: {error}")

    def plans(self) -> list[Plan]:
        prepare = {
            "plain": self.prepare_plain,
            "referral": self.prepare_referral,
            "transition": self.prepare_transition,
        }
        return [
            Plan(scenario, self.server, prepare[scenario.name], self.rates.note)
            for scenario in SCENARIOS
        ]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.referrals", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    loadrun.add_arguments(parser)
    parser.add_argument(
        "--max-rate",
        type=float,
        default=1500.0,
        help="req/s to prepare inputs for before a rate is measured (default 1500)",
    )
    options = parser.parse_args(argv)
    loadrun.check_arguments(parser, options)
    return options


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    options.wrk = loadrun.find_wrk()
    loadrun.WORK_DIR.mkdir(parents=True, exist_ok=True)
    print(
        f"Referral benchmark (issue 5): PostgreSQL, {options.workers} workers, "
        f"{options.connections} connections, {options.duration} s x {options.repeat} runs"
    )
    extra: dict[str, Any] = {}
    with crud.postgres_database(options.postgres_url) as url:
        print("   migrating, waymark seed-demo", flush=True)
        loadrun.prepare_database(url)
        cores = loadrun.background("the server")
        log = loadrun.WORK_DIR / "server-referrals.log"
        with crud.serve(url, options.workers, log) as server:
            bench = Bench(options, server, url)
            runs = loadrun.drive(options.wrk, bench.plans(), options, "referrals")
            rows = asyncio.run(counts(bench.dsn))
        extra = {
            "background_cores": cores,
            "people_loaded": bench.people.made,
            "people_load_seconds": round(bench.people.load_seconds, 1),
            "referrals_made_unmeasured": bench.topped_up,
            "rows_at_end": rows,
        }
    summaries = loadrun.report(
        f"PostgreSQL, {options.workers} uvicorn workers, {options.connections} connections, "
        f"{options.duration} s runs",
        runs,
        SCENARIOS,
        options,
    )
    referrals = rows.get("referral", 0)
    if referrals:
        per = ", ".join(
            f"{name} {rows.get(name, 0) / referrals:.2f}"
            for name in ("resource Task", "referral_event", "gate_decision")
        )
        print(f"rows per referral at the end ({referrals:,} referrals): {per}")
    print(
        f"people bulk-loaded: {bench.people.made:,} in {bench.people.load_seconds:.1f} s; "
        f"referrals made unmeasured for the transitions: {bench.topped_up:,}"
    )
    loadrun.write_results(
        "referrals", options, {"runs": runs, "summaries": summaries, "extra": extra}
    )
    return loadrun.exit_status(runs, summaries, options.check_targets)


if __name__ == "__main__":
    sys.exit(main())
