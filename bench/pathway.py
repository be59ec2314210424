"""``$pathway`` on a large database (issue 7): ``python -m bench.pathway``.

Runs against a database loaded by :mod:`bench.generate` (default ``waymark_bench_scale``,
1,000,000 resources for the target; the load's resources have no pathway projections):

1. ``waymark seed-demo`` on it (idempotent: the definitions, gates and demo directory);
2. serves :func:`bench.app.create_bench_app` (uvicorn, ``--workers 2``, ``WAYMARK_AUTH=off``
   on loopback) and builds ``--people`` people through the real API, so that their
   projections exist: a Patient, ``--observations`` Observations (last use of alcohol and drugs,
   AUDIT-C, units a week, readiness reviews) and ``--referrals`` referrals along the demo
   routes, most of them taken through their Task workflow to completed, rejected or
   cancelled, the rest left open (requested, received, accepted, in progress, or held by a
   gate), plus the pathway CarePlan the first accepted referral makes, with phase 1 started;
3. checks each person's ``$pathway`` (open referrals, gate decisions, phase, review);
4. sends ``--requests`` requests of each scenario at ``--concurrency`` clients in
   ``--rounds`` interleaved rounds (after a warm-up), and prints p50/p99, req/s and CPU per
   request (uvicorn, this database's PostgreSQL backends):

   * ``bare``     GET /_bench/bare (HTTP, middleware, client)
   * ``read``     GET /Patient/{id} of the people (a plain read)
   * ``pathway``  GET /Patient/{id}/$pathway of the people

Each run adds its people (about 20 + 200 + 100 resources and versions each) and AuditEvents
to the database. Target: ``$pathway`` p50 under 30 ms on PostgreSQL.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson

from bench import bulk, crud, generate, loadrun, search_scale
from bench.search_scale import Call

TARGET_P50_MS = 30.0
SCENARIOS = ("bare", "read", "pathway")
LABELS = {"bare": "bare endpoint", "read": "read Patient", "pathway": "$pathway"}
PATHWAY_CODES = "https://fhir.waymark.org.uk/CodeSystem/pathway-codes"
PATCH = {"Content-Type": "application/json-patch+json"}
SNOMED = "http://snomed.info/sct"

#: (sender, receiving service, referral code, what becomes of it). One open referral per
#: receiving service at most, as the pathway requires.
REFERRALS = (
    ("gp", "solway-dat", "417096006", "in-progress"),
    ("dat", "solway-pharm", "306179008", "completed"),
    ("dat", "solway-pharm", "306179008", "completed"),
    ("dat", "solway-pharm", "306179008", "requested"),
    ("dat", "solway-cmht", "390866009", "cancelled"),
    ("dat", "solway-cmht", "390866009", "held"),
    ("dat", "solway-psy", "309625004", "held"),
    ("dat", "northisles-psy", "309625004", "rejected"),
    ("dat", "northisles-psy", "309625004", "completed"),
    ("dat", "northisles-psy", "309625004", "accepted"),
    ("dat", "solway-gp2", "183561008", "completed"),
    ("dat", "solway-gp2", "183561008", "completed"),
    ("dat", "solway-gp2", "183561008", "in-progress"),
    ("gp", "northisles-dat", "417096006", "cancelled"),
    ("gp", "northisles-dat", "417096006", "rejected"),
    ("gp", "northisles-dat", "417096006", "completed"),
    ("gp", "northisles-dat", "417096006", "requested"),
    ("dat", "northisles-pharm", "306179008", "completed"),
    ("dat", "northisles-pharm", "306179008", "cancelled"),
    ("dat", "northisles-pharm", "306179008", "received"),
)
STEPS = {
    "requested": [],
    "held": [],
    "received": ["received"],
    "accepted": ["accepted"],
    "in-progress": ["accepted", "in-progress"],
    "completed": ["accepted", "in-progress", "completed"],
    "rejected": ["rejected"],
    "cancelled": ["cancelled"],
}


def observations(patient_id: str, count: int, rng: random.Random) -> list[dict[str, Any]]:
    """A person's record over two years: evidence of last use (recent, so the abstinence
    gates hold), AUDIT-C scores, units a week, and readiness reviews."""
    now = datetime.now(UTC).replace(microsecond=0)
    found: list[dict[str, Any]] = []
    for n in range(count):
        when = now - timedelta(days=rng.randint(1, 730), minutes=n)
        kind = n % 10
        if kind < 3:  # last use: the latest ones are recent
            code = bulk.SUBSTANCES[n % 2][0]
            used = when.date() - timedelta(days=rng.randint(0, 20))
            found.append(bulk.last_use(patient_id, code, used, when).document)
            continue
        document: dict[str, Any] = {
            "resourceType": "Observation",
            "status": "final",
            "subject": {"reference": f"Patient/{patient_id}"},
            "effectiveDateTime": generate._instant(when),
        }
        if kind < 7:
            document["code"] = {
                "coding": [{"system": generate.LOINC, "code": "75626-2"}],
                "text": "AUDIT-C",
            }
            document["valueQuantity"] = {
                "value": rng.randint(0, 12),
                "system": generate.UCUM,
                "code": "{score}",
                "unit": "score",
            }
        elif kind < 9:
            document["code"] = {
                "coding": [{"system": SNOMED, "code": "1082641000000106"}],
                "text": "Alcohol units consumed per week",
            }
            document["valueQuantity"] = {
                "value": rng.randint(0, 140),
                "system": generate.UCUM,
                "code": "/wk",
                "unit": "units/week",
            }
        else:
            document["code"] = {"coding": [{"system": PATHWAY_CODES, "code": "readiness-review"}]}
            answer = rng.choice(("not-ready", "deferred", "ready"))
            document["valueCodeableConcept"] = {
                "coding": [{"system": PATHWAY_CODES, "code": answer}]
            }
            document["performer"] = [{"display": "Community psychiatric nurse"}]
            document["note"] = [{"text": "Grounding skills reviewed."}]
        found.append(document)
    return found


def _patch(http: httpx.Client, path: str, operations: list[dict[str, Any]]) -> dict[str, Any]:
    response = http.patch(path, content=orjson.dumps(operations), headers=PATCH)
    if response.status_code != 200:
        raise crud.BenchError(f"PATCH {path}: {response.status_code} {response.text[:300]}")
    answer: dict[str, Any] = orjson.loads(response.content)
    return answer


def move(http: httpx.Client, task: str, steps: list[str]) -> None:
    for status in steps:
        operations: list[dict[str, Any]] = [{"op": "replace", "path": "/status", "value": status}]
        if status in ("rejected", "cancelled"):
            reason = {"text": f"{status.capitalize()} by the benchmark's clinician"}
            operations.append({"op": "add", "path": "/statusReason", "value": reason})
        _patch(http, f"/{task}", operations)


def person(http: httpx.Client, n: int, options: argparse.Namespace) -> dict[str, Any]:
    """One person's pathway, built through the API; their id and what was made."""
    rng = random.Random(options.seed * 1000 + n)
    services = {code: loadrun.service(http, code) for code in {r[1] for r in REFERRALS}}
    roles = {
        "gp": loadrun.role_for(http, loadrun.service(http, "solway-gp1")["id"]),
        "dat": loadrun.role_for(http, services["solway-dat"]["id"]),
    }
    base = 700_000_000 + 2 * rng.randrange(50_000_000)
    document = bulk.patient(n, nhs_base=base, gp_org=None, when=datetime.now(UTC)).document
    patient_id = str(loadrun.created(http, document)["id"])
    for observation in observations(patient_id, options.observations, rng):
        loadrun.created(http, observation)
    fates: dict[str, int] = {}
    plans = 0
    for number in range(options.referrals):
        sender, to, code, fate = REFERRALS[number % len(REFERRALS)]
        if number >= len(REFERRALS):
            fate = "completed"  # beyond the list: closed ones only, so none is refused
        referral = loadrun.referral(
            requester_role=roles[sender],
            performer=services[to]["id"],
            code=(code, "Referral"),
            patient=patient_id,
        )
        made = loadrun.created(http, referral)
        task = next(
            e["valueReference"]["reference"]
            for e in made.get("extension", [])
            if e["url"].endswith("referral-task")
        )
        status = orjson.loads(http.get(f"/{task}").content)["status"]
        if fate == "held" and status != "on-hold":
            raise crud.BenchError(f"a referral to {to} was not held ({status})")
        steps = STEPS[fate]
        if status == "on-hold" and fate not in ("held", "cancelled"):
            fate, steps = "cancelled", ["cancelled"]  # a gate held it: close it instead
        move(http, task, steps)
        fates[fate] = fates.get(fate, 0) + 1
        if "accepted" in steps and not plans:
            plans = _start_phase_one(http, patient_id)
    return {"id": patient_id, "fates": fates}


def _start_phase_one(http: httpx.Client, patient_id: str) -> int:
    found = orjson.loads(http.get("/CarePlan", params={"subject": f"Patient/{patient_id}"}).content)
    entries = found.get("entry", [])
    if entries:
        plan = entries[0]["resource"]["id"]
        operation = {"op": "replace", "path": "/activity/0/detail/status", "value": "in-progress"}
        _patch(http, f"/CarePlan/{plan}", [operation])
    return len(entries)


def check(http: httpx.Client, people: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What each person's $pathway holds (and that it answers 200)."""
    seen = []
    for who in people:
        response = http.get(f"/Patient/{who['id']}/$pathway")
        if response.status_code != 200:
            raise crud.BenchError(f"$pathway: {response.status_code} {response.text[:300]}")
        names = [p["name"] for p in orjson.loads(response.content).get("parameter", [])]
        seen.append(
            {
                "bytes": len(response.content),
                **{name: names.count(name) for name in sorted(set(names))},
            }
        )
    return seen


async def measure(
    options: argparse.Namespace, server: crud.Server, ids: list[str]
) -> dict[str, list[search_scale.Block]]:
    def calls(scenario: str, count: int, offset: int) -> list[Call]:
        if scenario == "bare":
            return [Call("GET", "/_bench/bare")] * count
        suffix = "/$pathway" if scenario == "pathway" else ""
        return [
            Call("GET", f"/Patient/{ids[(offset + i) % len(ids)]}{suffix}") for i in range(count)
        ]

    blocks: dict[str, list[search_scale.Block]] = {s: [] for s in SCENARIOS}
    per_round = max(1, options.requests // options.rounds)
    limits = httpx.Limits(max_connections=options.concurrency * 2)
    async with httpx.AsyncClient(
        base_url=server.base_url, timeout=60, trust_env=False, limits=limits
    ) as client:
        pid, database = server.process.pid, server.database or ""
        for scenario in SCENARIOS:
            await search_scale.run_block(
                client, calls(scenario, options.warmup, 0), options.concurrency, pid, database
            )
        for r in range(options.rounds):
            for scenario in SCENARIOS:
                block = await search_scale.run_block(
                    client, calls(scenario, per_round, r), options.concurrency, pid, database
                )
                blocks[scenario].append(block)
                print(
                    f"   [round {r + 1}/{options.rounds}] {scenario:<8} "
                    f"p50 {statistics.median(block.latencies_ms):7.2f} ms  "
                    f"max {max(block.latencies_ms):8.2f} ms  "
                    f"{len(block.latencies_ms) / block.wall:7.1f} req/s"
                    + (f"  {block.statuses}" if set(block.statuses) - {"200"} else ""),
                    flush=True,
                )
    return blocks


def print_table(title: str, summaries: Sequence[search_scale.Summary]) -> None:
    print(f"\n{title}")
    header = (
        f"{'scenario':<14} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>8} {'n':>5} {'non-2xx':>7} "
        f"{'ms/req srv/pg':>14}  round p50s / target"
    )
    print(header)
    print("-" * len(header))
    for s in summaries:
        rounds = "/".join(f"{v:.1f}" for v in s.round_p50s)
        per_request = f"{s.server_ms_per_request:.2f}/{s.postgres_ms_per_request:.2f}"
        print(
            f"{LABELS[s.scenario]:<14} {s.p50_ms:>8.2f} {s.p99_ms:>8.2f} {s.rps:>8.1f} "
            f"{s.requests:>5} {s.non2xx:>7} {per_request:>14}  {rounds}  {s.verdict}"
        )
        if s.first_error:
            print(f"   first error: {s.first_error}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.pathway", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument("--database", default=generate.DEFAULT_DATABASE)
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("WAYMARK_BENCH_POSTGRES_URL", generate.DEFAULT_POSTGRES_URL),
        help="admin URL of the server holding the database (env WAYMARK_BENCH_POSTGRES_URL)",
    )
    parser.add_argument("--people", type=int, default=1, help="people built (default 1)")
    parser.add_argument("--referrals", type=int, default=20, help="per person (default 20)")
    parser.add_argument("--observations", type=int, default=200, help="per person (default 200)")
    parser.add_argument("--requests", type=int, default=400, help="per scenario (default 400)")
    parser.add_argument("--rounds", type=int, default=4, help="interleaved rounds (default 4)")
    parser.add_argument("--concurrency", type=int, default=1, help="clients (default 1)")
    parser.add_argument("--warmup", type=int, default=40, help="requests per scenario first")
    parser.add_argument("--workers", type=int, default=2, help="uvicorn workers (default 2)")
    parser.add_argument("--seed", type=int, default=1)
    options = parser.parse_args(argv)
    if options.requests < options.rounds or min(options.people, options.concurrency) < 1:
        parser.error("--requests must be at least --rounds; --people, --concurrency at least 1")
    return options


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    if not asyncio.run(generate.database_exists(options.postgres_url, options.database)):
        print(f"no database {options.database}: run python -m bench.generate first")
        return 2
    url = generate.sqlalchemy_url(options.postgres_url, options.database)
    count = asyncio.run(resources(loadrun.dsn(url)))
    print(
        f"$pathway benchmark (issue 7) on {options.database}: {count:,} resources; "
        f"{options.people} people x {options.referrals} referrals + {options.observations} "
        f"Observations; {options.requests} requests per scenario at {options.concurrency} "
        f"client(s), {options.rounds} rounds",
        flush=True,
    )
    loadrun.WORK_DIR.mkdir(parents=True, exist_ok=True)
    loadrun.waymark("seed-demo", database_url=url)
    cores = loadrun.background("the server")
    with crud.serve(url, options.workers, loadrun.WORK_DIR / "server-pathway.log") as server:
        with loadrun.client(server.base_url) as http:
            people = []
            for n in range(options.people):
                people.append(person(http, n, options))
                print(f"   person {n + 1}: {people[-1]}", flush=True)
            answers = check(http, people)
        print(f"   $pathway holds: {answers}", flush=True)
        blocks = asyncio.run(measure(options, server, [p["id"] for p in people]))
    summaries = [search_scale.summarise(s, blocks[s]) for s in SCENARIOS]
    for summary in summaries:
        if summary.scenario == "pathway":
            met = summary.p50_ms < TARGET_P50_MS
            summary.verdict = f"p50 target < {TARGET_P50_MS:.0f} ms: {'MET' if met else 'MISSED'}"
        elif summary.scenario == "read":
            summary.verdict = "the plain read beside it"
    print_table(
        f"{count:,} resources, {options.workers} workers, {options.concurrency} client(s)",
        summaries,
    )
    loadrun.write_results(
        "pathway",
        options,
        {
            "database": options.database,
            "resources": count,
            "background_cores": cores,
            "people": people,
            "pathway_answers": answers,
            "summaries": [asdict(s) for s in summaries],
            "latencies_ms": {s: [v for b in blocks[s] for v in b.latencies_ms] for s in SCENARIOS},
        },
    )
    failed = any(s.non2xx for s in summaries)
    return 1 if failed else 0


async def resources(dsn: str) -> int:
    import asyncpg

    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        count: int = await conn.fetchval("SELECT count(*) FROM resource")
        return count
    finally:
        await conn.close()


if __name__ == "__main__":
    sys.exit(main())
