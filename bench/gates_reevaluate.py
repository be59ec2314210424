"""``waymark gates reevaluate`` over many held referrals (issue 6):
``python -m bench.gates_reevaluate``.

1. A fresh PostgreSQL database, migrated, ``waymark seed-demo``, and ``--unrelated`` resources
   of :mod:`bench.generate`'s realistic mix (Patients, referrals and Tasks without
   projections, some of them on-hold, Observations), bulk-loaded with the app's row builders.
2. Through the API (one server, 2 workers, ``--concurrency`` clients; hooks and all):
   ``--held`` referrals from the drug and alcohol team to Solway psychology, whose enforced
   abstinence gate holds them (people bulk-loaded with evidence that does not meet it, or
   none), and ``--met-share`` as many again whose evidence meets it (gate decisions that hold
   nothing: unrelated rows of the same tables).
3. Time passes: for ``--release-share`` of the held people, evidence that now meets the gate
   is bulk-loaded (no hook runs, as when only the calendar moves: the app's clock cannot be
   moved from outside a test), so that a re-evaluation releases them.
4. With the server stopped and the tables vacuumed and analysed, ``waymark gates reevaluate``
   (the real CLI, ``--batch``) runs twice: the first releases, the second finds nothing to
   release (what a scheduled run costs). Each is timed; for the first, the per-table counters
   of PostgreSQL (pg_stat_user_tables, pg_stat_user_indexes, pg_statio_user_tables) before and
   after say how many rows and blocks it read, next to how many rows each table holds.
5. The plans: one batch of ``--explain`` held referrals re-evaluated in-process by the app's own
   function (:func:`app.pathway.gate_release.reevaluate_held`) with auto_explain (ANALYZE,
   BUFFERS, nested statements) reporting to this client, then rolled back; and the batch query
   at the CLI's batch size at the start and in the middle of the held ids.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import resource
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson

from bench import bulk, crud, generate, loadrun
from bench.gates import PSYCHOLOGY

STATS = """
SELECT s.relname AS table, s.seq_scan, s.seq_tup_read, coalesce(s.idx_scan, 0) AS idx_scan,
       coalesce(s.idx_tup_fetch, 0) AS idx_tup_fetch, s.n_tup_ins, s.n_tup_upd, s.n_live_tup,
       coalesce((SELECT sum(i.idx_tup_read) FROM pg_stat_user_indexes i
                 WHERE i.relid = s.relid), 0)::bigint AS idx_tup_read,
       coalesce(io.heap_blks_read, 0) + coalesce(io.heap_blks_hit, 0) AS heap_blocks,
       coalesce(io.idx_blks_read, 0) + coalesce(io.idx_blks_hit, 0) AS index_blocks
FROM pg_stat_user_tables s JOIN pg_statio_user_tables io USING (relid)
ORDER BY s.relname
"""
COUNTERS = (
    "seq_scan",
    "seq_tup_read",
    "idx_scan",
    "idx_tup_read",
    "idx_tup_fetch",
    "n_tup_ins",
    "n_tup_upd",
    "heap_blocks",
    "index_blocks",
)


async def table_stats(dsn: str) -> dict[str, dict[str, int]]:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        return {r["table"]: dict(r) for r in await conn.fetch(STATS)}
    finally:
        await conn.close()


async def settled_stats(dsn: str) -> dict[str, dict[str, int]]:
    """The counters once the CLI's backend has reported them (it does as it exits)."""
    last = await table_stats(dsn)
    for _ in range(20):
        await asyncio.sleep(0.5)
        now = await table_stats(dsn)
        if now == last:
            return now
        last = now
    return last


def deltas(
    before: dict[str, dict[str, int]], after: dict[str, dict[str, int]]
) -> dict[str, dict[str, int]]:
    found = {}
    for table, values in after.items():
        old = before.get(table, {})
        change = {c: int(values[c]) - int(old.get(c, 0)) for c in COUNTERS}
        change["rows"] = int(values["n_live_tup"])
        if any(change[c] for c in COUNTERS):
            found[table] = change
    return found


async def composition(dsn: str) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        return {
            "resources": {
                r[0]: r[1]
                for r in await conn.fetch(
                    "SELECT resource_type, count(*) FROM resource GROUP BY 1 ORDER BY 1"
                )
            },
            "gate_decision": {
                f"held={r[0]} released={r[1]}": r[2]
                for r in await conn.fetch(
                    "SELECT held, released_at IS NOT NULL, count(*) FROM gate_decision "
                    "GROUP BY 1, 2 ORDER BY 1, 2"
                )
            },
            "referral": await conn.fetchval("SELECT count(*) FROM referral"),
            "tasks_on_hold": await conn.fetchval(
                "SELECT count(*) FROM search_token WHERE resource_type = 'Task' "
                "AND param = 'status' AND code = 'on-hold'"
            ),
        }
    finally:
        await conn.close()


async def held_people(dsn: str) -> list[str]:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        rows = await conn.fetch(
            "SELECT DISTINCT patient_id FROM gate_decision WHERE held AND released_at IS NULL "
            "ORDER BY 1"
        )
        return [r[0] for r in rows]
    finally:
        await conn.close()


async def vacuum(dsn: str) -> None:
    conn = await asyncpg.connect(dsn, timeout=10, server_settings={"statement_timeout": "0"})
    try:
        await conn.execute("VACUUM (ANALYZE)")
    finally:
        await conn.close()


def refer(
    options: argparse.Namespace, server: crud.Server, template: bytes, people: list[str]
) -> int:
    """POST a referral for each person, in chunks so that progress shows; the 201s."""
    made = 0
    for start in range(0, len(people), options.chunk):
        chunk = people[start : start + options.chunk]
        seconds, statuses, error = asyncio.run(
            loadrun.post_each(
                server.base_url,
                "/ServiceRequest",
                template,
                chunk,
                concurrency=options.concurrency,
            )
        )
        made += statuses.get(201, 0)
        print(
            f"   {made:,} / {len(people):,} referrals made ({len(chunk) / max(seconds, 1):,.0f}/s)",
            flush=True,
        )
        if set(statuses) != {201}:
            raise crud.BenchError(f"making referrals: {statuses}; first error: {error}")
    return made


def load(options: argparse.Namespace, url: str) -> dict[str, Any]:
    """Steps 1 to 3; what was made."""
    dsn = loadrun.dsn(url)
    loadrun.prepare_database(url)
    made: dict[str, Any] = {}
    if options.unrelated:
        started = time.monotonic()
        count = options.unrelated
        mix = generate.Mix(count, min(150, count // 100), min(300, count // 50))
        end = datetime.now(UTC).replace(microsecond=0)
        asyncio.run(bulk.load(dsn, generate.stream(mix, options.seed, end)))
        made["unrelated_load_s"] = round(time.monotonic() - started, 1)
        print(
            f"   {options.unrelated:,} unrelated resources loaded in {made['unrelated_load_s']} s",
            flush=True,
        )
    held = bulk.People(
        dsn, gp_org=None, nhs_base=660_000_000, mix={"not-met": 0.7, "unknown": 0.3}, seed=2
    )
    met = bulk.People(dsn, gp_org=None, nhs_base=680_000_000, mix={"met": 1.0}, seed=3)
    with crud.serve(url, options.workers, loadrun.WORK_DIR / "server-reevaluate.log") as server:
        with loadrun.client(server.base_url) as http:
            dat = loadrun.service(http, "solway-dat")
            psy = loadrun.service(http, "solway-psy")
            role = loadrun.role_for(http, dat["id"])
        template = orjson.dumps(
            loadrun.referral(requester_role=role, performer=psy["id"], code=PSYCHOLOGY)
        )
        started = time.monotonic()
        print(f"   referring {options.held:,} people the gate will hold", flush=True)
        made["held_referrals"] = refer(options, server, template, held.take(options.held))
        extra = round(options.held * options.met_share)
        print(f"   referring {extra:,} people whose evidence meets the gate", flush=True)
        made["met_referrals"] = refer(options, server, template, met.take(extra))
        made["referrals_s"] = round(time.monotonic() - started, 1)
    # Time passes: for some of the people held, evidence that meets the gate now.
    rng = random.Random(options.seed)
    waiting = asyncio.run(held_people(dsn))
    chosen = rng.sample(waiting, round(len(waiting) * options.release_share))
    now = datetime.now(UTC).replace(microsecond=0)
    long_ago = now.date() - timedelta(days=200)
    asyncio.run(
        bulk.load(
            dsn,
            (
                bulk.last_use(person, code, long_ago, now)
                for person in chosen
                for code, _ in bulk.SUBSTANCES
            ),
        )
    )
    made["people_whose_gate_is_now_met"] = len(chosen)
    print(f"   evidence now meeting the gate for {len(chosen):,} of the people held", flush=True)
    return made


def timed_cli(url: str, batch: int) -> dict[str, Any]:
    cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    output = loadrun.waymark("gates", "reevaluate", "--batch", str(batch), database_url=url)
    seconds = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    used = (after.ru_utime - cpu.ru_utime) + (after.ru_stime - cpu.ru_stime)
    return {"seconds": round(seconds, 2), "cli_cpu_s": round(used, 2), "output": output.strip()}


def startup_seconds(url: str) -> float:
    started = time.monotonic()
    loadrun.waymark("gates", "--help", database_url=url)
    return round(time.monotonic() - started, 2)


_FLUSH = "SELECT 'flush the last plan'"


async def explain(url: str, limit: int, batch: int) -> tuple[list[str], list[str]]:
    """auto_explain's plans of one in-process batch of re-evaluation (rolled back), and of the
    batch query at ``batch`` from the start and from the middle of the held ids."""
    from app import pathway
    from app.config import Settings
    from app.db import make_engine
    from app.pathway.gate_release import reevaluate_held
    from app.pathway.repository import GateRepository
    from app.runtime import Runtime

    settings = Settings(database_url=url, db_pool_size=1, db_max_overflow=0)
    engine = make_engine(settings)
    plans: list[str] = []
    batch_plans: list[str] = []
    try:
        async with engine.connect() as conn:
            repository = GateRepository(conn)
            ids = await repository.held_referrals(after="", limit=10**9)
            raw = await conn.get_raw_connection()
            raw.driver_connection.add_log_listener(  # type: ignore[union-attr]
                lambda _conn, message: plans.append(message.message)
            )
            for statement in (
                "LOAD 'auto_explain'",
                "SET LOCAL auto_explain.log_min_duration = 0",
                "SET LOCAL auto_explain.log_analyze = on",
                "SET LOCAL auto_explain.log_buffers = on",
                "SET LOCAL auto_explain.log_nested_statements = on",
                "SET LOCAL auto_explain.log_level = 'notice'",
            ):
                await conn.exec_driver_sql(statement)
            for after in ("", ids[len(ids) // 2] if ids else ""):
                await repository.held_referrals(after=after, limit=batch)
            # A statement's plan is reported when its portal closes, with the next statement.
            await conn.exec_driver_sql(_FLUSH)
            await asyncio.sleep(0.2)
            batch_plans, plans[:] = list(plans), []
            store = Runtime(settings=settings, engine=engine, hooks=pathway.hooks()).store(conn)
            await reevaluate_held(store, after="", limit=limit)
            await conn.exec_driver_sql(_FLUSH)
            await asyncio.sleep(0.2)
            await conn.rollback()
    finally:
        await engine.dispose()
    return [p for p in batch_plans if _FLUSH not in p], [p for p in plans if _FLUSH not in p]


_NODE = re.compile(
    r"((?:Parallel )?(?:Index Only Scan|Index Scan|Bitmap Heap Scan|Bitmap Index Scan|Seq Scan)"
    r"(?: Backward)?)(?: using (\S+))? on (\S+).*?\(actual time=\S+ rows=(\d+) loops=(\d+)\)"
)


def _statement(plan: str) -> str:
    text = plan.split("Query Text:", 1)[-1].strip()
    first = text.split(None, 1)[0].upper() if text else "?"
    if first == "WITH":
        main = re.search(r"\)\s*(INSERT|UPDATE|DELETE|SELECT)\b", text, re.IGNORECASE)
        first = main.group(1).upper() if main else first
    if first == "SELECT" and re.search(r"\bFOR UPDATE\b", text.split("\n\n")[0]):
        return "SELECT FOR UPDATE"
    return first


def scans(plan: str) -> str:
    """One line about a plan: its statement and duration, and each scan with the rows it
    returned, the rows it read and threw away (Rows Removed by Filter), and its buffers."""
    lines = plan.splitlines()
    duration = re.search(r"duration: ([\d.]+) ms", plan)
    statement = _statement(plan)
    found = []
    for number, line in enumerate(lines):
        node = _NODE.search(line)
        if node is None:
            continue
        kind, index, table, rows, loops = node.groups()
        removed = buffers = 0
        for detail in lines[number + 1 :]:
            if "->" in detail or _NODE.search(detail):
                break
            if match := re.search(r"Rows Removed by (?:Filter|Index Recheck): (\d+)", detail):
                removed += int(match.group(1))
            if match := re.search(r"Buffers: shared hit=(\d+)(?: read=(\d+))?", detail):
                buffers = int(match.group(1)) + int(match.group(2) or 0)
        rows_read = int(rows) * int(loops)
        found.append(
            f"{kind} on {table}{f' ({index})' if index else ''}: {rows_read} rows"
            + (f", {removed * int(loops)} removed by filter" if removed else "")
            + f", {buffers} buffers"
        )
    return f"{statement} {float(duration.group(1)) if duration else 0:.2f} ms: " + "; ".join(found)


def print_reads(change: dict[str, dict[str, int]], held: int) -> None:
    print(
        f"\n{'table':<18} {'rows':>10} {'seq scans':>9} {'seq rows':>10} {'idx scans':>9} "
        f"{'idx entries':>11} {'rows fetched':>12} {'ins/upd':>13} {'blocks':>9}  "
        f"read per held referral"
    )
    for table, c in sorted(change.items(), key=lambda item: -item[1]["rows"]):
        read = c["seq_tup_read"] + c["idx_tup_fetch"]
        print(
            f"{table:<18} {c['rows']:>10,} {c['seq_scan']:>9,} {c['seq_tup_read']:>10,} "
            f"{c['idx_scan']:>9,} {c['idx_tup_read']:>11,} {c['idx_tup_fetch']:>12,} "
            f"{c['n_tup_ins']:>6,}/{c['n_tup_upd']:<6,} "
            f"{c['heap_blocks'] + c['index_blocks']:>9,}  "
            f"{read / max(held, 1):.2f} rows, {c['idx_tup_read'] / max(held, 1):.2f} entries"
        )
    scans = [
        f"{t} ({c['seq_scan']} scans, {c['seq_tup_read']:,} rows of {c['rows']:,})"
        for t, c in change.items()
        if c["seq_scan"] and c["rows"] > 1000
    ]
    print("sequential scans of tables over 1,000 rows: " + (", ".join(scans) if scans else "none"))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.gates_reevaluate",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    parser.add_argument("--held", type=int, default=2000, help="held referrals (full: 100000)")
    parser.add_argument(
        "--met-share", type=float, default=0.5, help="referrals not held, per held one (0.5)"
    )
    parser.add_argument(
        "--release-share", type=float, default=0.3, help="held ones whose gate becomes met (0.3)"
    )
    parser.add_argument(
        "--unrelated", type=int, default=20000, help="bench.generate resources (full: 200000)"
    )
    parser.add_argument("--batch", type=int, default=200, help="waymark gates reevaluate --batch")
    parser.add_argument("--explain", type=int, default=3, help="referrals in the explained batch")
    parser.add_argument("--concurrency", type=int, default=32, help="clients making referrals")
    parser.add_argument("--chunk", type=int, default=5000, help="referrals per progress line")
    parser.add_argument("--workers", type=int, default=2, help="uvicorn workers (default 2)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("WAYMARK_BENCH_POSTGRES_URL", crud.DEFAULT_POSTGRES_URL),
        help="admin URL used to create and drop the benchmark database",
    )
    options = parser.parse_args(argv)
    if options.held < 1 or options.unrelated < 0:
        parser.error("--held must be at least 1, --unrelated at least 0")
    if 0 < options.unrelated < 1000:
        parser.error("--unrelated must be 0 or at least 1000")
    return options


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    loadrun.WORK_DIR.mkdir(parents=True, exist_ok=True)
    print(
        f"gates reevaluate benchmark (issue 6): {options.held:,} held referrals, "
        f"{options.unrelated:,} unrelated resources; load average "
        f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}",
        flush=True,
    )
    with crud.postgres_database(options.postgres_url) as url:
        dsn = loadrun.dsn(url)
        made = load(options, url)
        asyncio.run(vacuum(dsn))
        present = asyncio.run(composition(dsn))
        print(f"   the database: {orjson.dumps(present).decode()}", flush=True)
        startup = startup_seconds(url)
        before = asyncio.run(table_stats(dsn))
        first = timed_cli(url, options.batch)
        after = asyncio.run(settled_stats(dsn))
        second = timed_cli(url, options.batch)
        left = asyncio.run(composition(dsn))
        batch_plans, plans = asyncio.run(explain(url, options.explain, options.batch))
    change = deltas(before, after)
    held = options.held
    print(
        f"\nwaymark gates reevaluate --batch {options.batch} over {held:,} held referrals: "
        f"{first['seconds']:.1f} s ({first['cli_cpu_s']:.1f} s CPU in the CLI; its start-up "
        f"alone {startup:.1f} s): {first['output']}"
    )
    print(
        f"run again (nothing to release): {second['seconds']:.1f} s: {second['output']}; "
        f"gate decisions now {left['gate_decision']}"
    )
    print(f"per held referral: {1000 * (first['seconds'] - startup) / held:.2f} ms (first run)")
    print_reads(change, held)
    print("\nplans of the batch query (at the start, and from the middle of the held ids):")
    for plan in batch_plans:
        print(f"  {scans(plan)}")
    print(f"plans of one batch of {options.explain} re-evaluations ({len(plans)} statements):")
    for plan in plans:
        print(f"  {scans(plan)}")
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    text = loadrun.RESULTS_DIR / f"gates-reevaluate-explain-{stamp}.txt"
    loadrun.RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    text.write_text(
        "The batch query:\n\n"
        + "\n\n".join(batch_plans)
        + f"\n\nOne batch of {options.explain} re-evaluations (rolled back):\n\n"
        + "\n\n".join(plans)
    )
    print(f"full plans: {text.relative_to(crud.ROOT)}")
    loadrun.write_results(
        "gates-reevaluate",
        options,
        {
            "made": made,
            "database": present,
            "after": left,
            "cli_startup_s": startup,
            "first_run": first,
            "second_run": second,
            "reads": change,
            "batch_plans": batch_plans,
            "plans": plans,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
