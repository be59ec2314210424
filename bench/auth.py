"""What authentication and the audit trail cost (issue 4): ``python -m bench.auth``.

Two servers (uvicorn, ``--workers 2`` each) share one fresh PostgreSQL database, both serving
:func:`bench.app.create_bench_app_audit_switch` (the bench app with a bench-only switch that
stops its audit trail being written while a flag file exists):

* ``on``   ``WAYMARK_AUTH=on``: every request carries a real SMART access token
* ``off``  ``WAYMARK_AUTH=off`` (loopback): no token; AuditEvents written as with ``on``
* ``noaudit``  the ``off`` server with its flag file present: the audit writer is a no-op

The client ``bench-ehr`` is registered as an EHR is (its own ES384 key pair, the public JWKS
given to ``waymark client add --jwks``, scope ``system/*.cruds``); before every run against
``on`` it gets a new access token from ``POST /auth/token`` with a signed client assertion,
so each token lives the server's default 300 s (``WAYMARK_ACCESS_TOKEN_SECONDS``) and is
refreshed long before it expires (a run may last at most the lifetime less 30 s).

Scenarios, interleaved, ``--connections 32``: read-by-id (``GET /Patient/{id}`` of ``--seed``
Patients) and create (``POST /Patient``, bench/fixtures.py) on each server. Printed: auth on
as a ratio to auth off (target >= 0.85), auth off as a ratio to no audit trail (the trail's
cost in throughput), the CPU per request of uvicorn and PostgreSQL on each, AuditEvents
written per request (counted in the database), their size and index rows, and what checking
an access token costs when it is not cached (the server checks each token once per worker).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from bench import crud, loadrun
from bench.crud import Run, Scenario
from bench.fixtures import patient_json
from bench.loadrun import Files, Plan
from bench.smart import SmartClient, Token, verification_cost

TARGET = 0.85
SWITCH_APP = "bench.app:create_bench_app_audit_switch"
CLIENT = "bench-ehr"
SCOPE = "system/*.cruds"

READ, CREATE = ("ids", "token"), ("patient", "token")
SCENARIOS = (
    Scenario("read-on", "read, auth on", "read.lua", READ, "read-off", TARGET),
    Scenario("read-off", "read, auth off", "read.lua", READ, "read-noaudit"),
    Scenario("read-noaudit", "read, no audit trail", "read.lua", READ),
    Scenario("create-on", "create, auth on", "create.lua", CREATE, "create-off", TARGET),
    Scenario("create-off", "create, auth off", "create.lua", CREATE, "create-noaudit"),
    Scenario("create-noaudit", "create, no audit trail", "create.lua", CREATE),
)


class Counter:
    """AuditEvents in the database, counted on a connection kept open (taken before the
    servers fill the PostgreSQL server's connections)."""

    def __init__(self, dsn: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.conn = self.loop.run_until_complete(asyncpg.connect(dsn, timeout=10))

    def audit_events(self) -> int:
        query = "SELECT count(*) FROM resource WHERE resource_type = 'AuditEvent'"
        count: int = self.loop.run_until_complete(self.conn.fetchval(query))
        return count

    def close(self) -> None:
        self.loop.run_until_complete(self.conn.close())
        self.loop.close()


async def audit_shape(dsn: str) -> dict[str, float]:
    """What one AuditEvent is in the database: bytes, versions, index rows."""
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        events = await conn.fetchval(
            "SELECT count(*) FROM resource WHERE resource_type = 'AuditEvent'"
        )
        shape: dict[str, float] = {"audit_events": events}
        if not events:
            return shape
        shape["content_bytes"] = await conn.fetchval(
            "SELECT avg(octet_length(content)) FROM resource WHERE resource_type = 'AuditEvent'"
        )
        for table in (
            "resource_version",
            "search_token",
            "search_string",
            "search_reference",
            "search_date",
            "search_quantity",
        ):
            rows = await conn.fetchval(
                f"SELECT count(*) FROM {table} WHERE resource_type = 'AuditEvent'"
            )
            shape[f"{table}_rows_per_event"] = rows / events
        return shape
    finally:
        await conn.close()


class Bench:
    def __init__(
        self,
        options: argparse.Namespace,
        servers: dict[str, crud.Server],
        url: str,
        no_audit_flag: Path,
        counter: Counter,
    ) -> None:
        self.options = options
        self.no_audit_flag = no_audit_flag
        self.counter = counter
        self.servers = servers
        self.dsn = loadrun.dsn(url)
        work = loadrun.WORK_DIR
        self.client = SmartClient.register(url, work, name=CLIENT, scope=SCOPE)
        self.token_file = work / "access-token.txt"
        self.tokens_fetched = 0
        self.token: Token | None = None
        print(f"   seeding {options.seed} Patients", flush=True)
        ids = asyncio.run(crud._seed(servers["off"].base_url, options.seed))
        self.ids = work / "auth-ids.txt"
        self.ids.write_text("\n".join(ids) + "\n")
        self.patient = work / "patient.json"
        self.patient.write_bytes(patient_json())
        self.audit_before = 0
        self.audit_per_request: dict[str, list[float]] = {}
        self._check_auth_is_on(ids[0])

    def _check_auth_is_on(self, patient_id: str) -> None:
        base = self.servers["on"].base_url
        bare = httpx.get(f"{base}/Patient/{patient_id}", timeout=30, trust_env=False)
        token = self.client.token(base)
        good = httpx.get(
            f"{base}/Patient/{patient_id}",
            headers={"Authorization": f"Bearer {token.value}"},
            timeout=30,
            trust_env=False,
        )
        if bare.status_code != 401 or good.status_code != 200:
            raise crud.BenchError(
                f"auth on: without a token {bare.status_code} (401 expected), with one "
                f"{good.status_code} (200 expected)"
            )
        self.token = token

    def prepare(self, scenario: Scenario, seconds: int) -> Files:
        if scenario.name.endswith("-noaudit"):
            self.no_audit_flag.touch()
        else:
            self.no_audit_flag.unlink(missing_ok=True)
        self.audit_before = self.counter.audit_events()
        paths = {"ids": str(self.ids), "patient": str(self.patient), "token": "-"}
        if scenario.name.endswith("-on"):
            self.token = self.client.token(self.servers["on"].base_url)  # refreshed every run
            self.tokens_fetched += 1
            if self.token.left() < seconds + 30:
                raise crud.BenchError(
                    f"an access token lives {self.token.left():.0f} s, a run {seconds} s: "
                    "set --token-seconds higher or --duration lower"
                )
            self.token_file.write_text(self.token.value)
            paths["token"] = str(self.token_file)
        return Files(paths)

    def finished(self, run: Run) -> None:
        written = self.counter.audit_events() - self.audit_before
        if run.repetition > 0:
            per = written / max(1, run.requests)
            self.audit_per_request.setdefault(run.scenario, []).append(per)

    def plans(self) -> list[Plan]:
        def make(scenario: Scenario) -> Plan:
            variant = scenario.name.split("-", 1)[1]
            server = self.servers["on" if variant == "on" else "off"]
            return Plan(scenario, server, lambda s: self.prepare(scenario, s), self.finished)

        return [make(scenario) for scenario in SCENARIOS]


def print_costs(summaries: Sequence[crud.Summary], bench: Bench, extra: dict[str, Any]) -> None:
    by = {s.scenario: s for s in summaries}
    print("\nWhat the audit trail and the token check cost per request (medians; CPU ms/req):")
    for kind in ("read", "create"):
        on, off, none = (by.get(f"{kind}-{v}") for v in ("on", "off", "noaudit"))
        if on is None or off is None or none is None:
            continue
        audit = bench.audit_per_request.get(f"{kind}-off", [0.0])
        unaudited = bench.audit_per_request.get(f"{kind}-noaudit", [0.0])
        print(
            f"  {kind:<6} audit trail: {off.ok_rps / none.ok_rps:.2f} x the rate without it, "
            f"+{off.server_ms_per_request - none.server_ms_per_request:.2f} ms uvicorn "
            f"+{off.postgres_ms_per_request - none.postgres_ms_per_request:.2f} ms PostgreSQL, "
            f"{sum(audit) / len(audit):.2f} AuditEvents per request "
            f"({sum(unaudited) / len(unaudited):.2f} with the switch off)"
        )
        print(
            f"  {kind:<6} token check: {on.ok_rps / off.ok_rps:.2f} x the rate with auth off, "
            f"{on.server_ms_per_request - off.server_ms_per_request:+.2f} ms uvicorn"
        )
    shape = extra.get("audit_shape", {})
    if shape.get("audit_events"):
        rows = ", ".join(
            f"{k.removesuffix('_rows_per_event')} {v:.1f}"
            for k, v in shape.items()
            if k.endswith("_rows_per_event")
        )
        print(
            f"  one AuditEvent: {shape['content_bytes']:.0f} bytes of JSON; rows besides its "
            f"resource row: {rows} ({shape['audit_events']:,.0f} in the database)"
        )
    print(
        f"  an access token's signature and claims checked uncached: "
        f"{extra['token_verify_ms']:.3f} ms (once per token and worker); "
        f"{bench.tokens_fetched} tokens fetched, one per run against auth on"
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.auth", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    loadrun.add_arguments(parser)
    parser.add_argument("--seed", type=int, default=1000, help="Patients seeded for read")
    parser.add_argument(
        "--token-seconds",
        type=int,
        default=None,
        help="WAYMARK_ACCESS_TOKEN_SECONDS for the auth-on server (default: the app's 300)",
    )
    options = parser.parse_args(argv)
    loadrun.check_arguments(parser, options)
    return options


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    wrk = loadrun.find_wrk()
    work = loadrun.WORK_DIR
    work.mkdir(parents=True, exist_ok=True)
    print(
        f"Auth and audit benchmark (issue 4): PostgreSQL, 2 servers x {options.workers} workers "
        f"on one database, {options.connections} connections, {options.duration} s x "
        f"{options.repeat} runs"
    )
    key_file = work / "token-signing-key.json"
    from app.security.signing_keys import SigningKeys

    SigningKeys(key_file).current()  # made once here, not raced by the servers' workers
    with crud.postgres_database(options.postgres_url) as url:
        from app.migrate import upgrade

        upgrade(url)
        cores = loadrun.background("the servers")
        flags = {name: work / f"no-audit-{name}.flag" for name in ("on", "off")}
        for flag in flags.values():
            flag.unlink(missing_ok=True)
        pool = loadrun.pool_for(options.postgres_url, 2, options.workers)
        env = {
            name: {
                "WAYMARK_BENCH_NO_AUDIT_FLAG": str(flag),
                "WAYMARK_TOKEN_KEY_FILE": str(key_file),
                **pool,
            }
            for name, flag in flags.items()
        }
        env["on"]["WAYMARK_AUTH"] = "on"
        if options.token_seconds:
            env["on"]["WAYMARK_ACCESS_TOKEN_SECONDS"] = str(options.token_seconds)
        with ExitStack() as stack:
            stack.callback(flags["off"].unlink, missing_ok=True)
            counter = Counter(loadrun.dsn(url))
            stack.callback(counter.close)
            servers = {
                name: stack.enter_context(
                    crud.serve(
                        url,
                        options.workers,
                        work / f"server-auth-{name}.log",
                        app=SWITCH_APP,
                        env=env[name],
                    )
                )
                for name in ("on", "off")
            }
            bench = Bench(options, servers, url, flags["off"], counter)
            runs = loadrun.drive(wrk, bench.plans(), options, "auth")
            assert bench.token is not None
            extra: dict[str, Any] = {
                "background_cores": cores,
                "audit_events_per_request": bench.audit_per_request,
                "audit_shape": asyncio.run(audit_shape(bench.dsn)),
                "token_verify_ms": verification_cost(
                    key_file, servers["on"].base_url, bench.token.value
                ),
                "tokens_fetched": bench.tokens_fetched,
            }
    summaries = loadrun.report(
        f"PostgreSQL, 2 servers x {options.workers} uvicorn workers on one database, "
        f"{options.connections} connections, {options.duration} s runs",
        runs,
        SCENARIOS,
        options,
    )
    print_costs(summaries, bench, extra)
    loadrun.write_results("auth", options, {"runs": runs, "summaries": summaries, "extra": extra})
    return loadrun.exit_status(runs, summaries, options.check_targets)


if __name__ == "__main__":
    sys.exit(main())
