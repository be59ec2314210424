"""Search and transaction latency on a large database: ``python -m bench.search_scale``.

Runs against a database loaded by :mod:`bench.generate` (default ``waymark_bench_scale``):

0. loads the pathway definitions with ``waymark seed`` (idempotent: Waymark's CodeSystems,
   ValueSets, the referral routes and the phase gate; the load has none, and referrals need
   the routes);
1. draws realistic parameters from the loaded data (a fixed ``--seed``, so runs at different
   sizes draw alike): NHS numbers of random Patients, random HealthcareServices (the owners of
   Tasks) and random referrals;
2. checks the app's answers against the documents themselves (JSON in the resource table, no
   search index) for a few of each (``--verify``);
3. serves :func:`bench.app:create_bench_app` with uvicorn (``--workers 2``, as bench/crud.py),
   and, for each scenario, sends ``--requests`` requests at ``--concurrency`` clients, in
   ``--rounds`` rounds interleaving the scenarios so that drift on a shared machine hits them
   all alike; p50/p99 are over every request of a scenario, and req/s and the CPU each
   request cost (uvicorn and PostgreSQL) are shown beside them:

   * ``bare``       GET /_bench/bare (the same-run baseline: HTTP, middleware, client)
   * ``chained``    GET /ServiceRequest?patient.identifier=https://fhir.nhs.uk/Id/nhs-number|<nhs>
   * ``worklist``   GET /Task?owner=HealthcareService/<id>&status=requested
   * ``revinclude`` GET /ServiceRequest?_id=<id>&_revinclude=Task:focus
   * ``transaction`` POST / : a transaction of 20 entries (a Patient by conditional create with
     a new NHS number, 3 referrals and 16 Observations linked by urn:uuid). The referrals are
     ones the pathway accepts: from a GP service (a PractitionerRole made through the API at
     the start, ``healthcareService`` = a ``gp`` service of the load) to three distinct drug and
     alcohol services (a route of ``referral-routes``; a second open referral for the same
     person to the same service would be refused), SNOMED 417096006, category 3457005,
     status active, intent order; each makes its Task in the same transaction;

4. then the plans: with ``auto_explain`` (log_analyze, buffers) and statement logging turned on
   for this database only (``ALTER DATABASE ... SET``, reset afterwards), a second server with
   one worker answers ``--explain-requests`` requests of each search one after another, so that
   the plans in the server log are those of the app's own statements on the app's own
   connection, both the first (custom) plans and the ones PostgreSQL settles on after five
   executions of a prepared statement (possibly generic). They are written to
   ``bench/results/scale-explain-<count>-<time>.txt``; ``--server-log`` names the log.

Everything goes to ``bench/results/scale-search-<count>-<time>.json``. Any response that is
not 2xx makes the exit status 1. The target (issue 3): p50 under 20 ms for each search.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import re
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import asyncpg
import httpx
import orjson

from app.fhir.identifiers import NHS_NUMBER_SYSTEM
from app.pathway.codes import SERVICE_KIND
from app.pathway.directory import service_from
from bench import generate, loadrun
from bench.crud import (
    BenchError,
    _background_load,
    _free_port,
    _proc_stat,
    _stop,
    _system_busy,
    _tail,
    _uvicorn,
    _wait_healthy,
)

ROOT = Path(__file__).resolve().parent.parent
WORK_DIR = ROOT / "var" / "bench"
RESULTS_DIR = ROOT / "bench" / "results"
DEFAULT_APP = "bench.app:create_bench_app"
DEFAULT_SERVER_LOG = "/var/log/postgresql/postgresql-15-main.log"
TARGET_P50_MS = 20.0
SEARCHES = ("chained", "worklist", "revinclude")
SCENARIOS = ("bare", *SEARCHES, "transaction")
LABELS = {
    "bare": "bare endpoint",
    "chained": "SR?patient.identifier (chained)",
    "worklist": "Task?owner&status",
    "revinclude": "SR?_id&_revinclude=Task:focus",
    "transaction": "transaction, 20 entries",
}
FHIR_JSON = "application/fhir+json"


# -- parameters drawn from the data -----------------------------------------------------------


#: The transaction's route: GP (the sender) to drug and alcohol (the receiving services).
SENDING_KIND, RECEIVING_KIND = "gp", "drug-alcohol"
REFERRALS_PER_TRANSACTION = 3


@dataclass
class Draws:
    nhs_numbers: list[str]
    owners: list[str]
    referrals: list[str]
    services: list[str]
    gp_practices: list[str]
    #: Active services with a Waymark kind, by kind (as the app reads HealthcareService.type).
    services_by_kind: dict[str, list[str]]


async def draw(dsn: str, seed: int, count: int) -> Draws:
    """Random Patients' NHS numbers, HealthcareServices and referrals, the same for a seed."""
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        salt = str(seed)
        nhs = [
            r[0]
            for r in await conn.fetch(
                "SELECT code FROM search_token WHERE resource_type = 'Patient' "
                "AND param = 'identifier' AND system = $1 ORDER BY md5(code || $2) LIMIT $3",
                NHS_NUMBER_SYSTEM,
                salt,
                count,
            )
        ]
        services_by_kind: dict[str, list[str]] = {}
        services = []
        for row in await conn.fetch(
            "SELECT id, content FROM resource WHERE resource_type = 'HealthcareService' "
            "AND NOT deleted ORDER BY id"
        ):
            services.append(row["id"])
            service = service_from(orjson.loads(row["content"]) | {"id": row["id"]})
            if service is not None:
                services_by_kind.setdefault(service.kind, []).append(service.id)
        referrals = [
            r[0]
            for r in await conn.fetch(
                "SELECT id FROM resource WHERE resource_type = 'ServiceRequest' AND NOT deleted "
                "ORDER BY md5(id || $1) LIMIT $2",
                salt,
                count,
            )
        ]
        gp = [
            r[0]
            for r in await conn.fetch(
                "SELECT resource_id FROM search_token WHERE resource_type = 'Organization' "
                "AND param = 'type' AND code = 'prov' ORDER BY resource_id"
            )
        ]
    finally:
        await conn.close()
    if not nhs or not services or not referrals:
        raise BenchError("the database holds no Patients, services or referrals: load it first")
    rng = random.Random(seed)
    # Every service that referrals reach polls its worklist (the load refers only along the
    # routes, so services of a kind no route leads into have none).
    receiving = sorted(
        service_id for kind in generate.ROUTES.into for service_id in services_by_kind.get(kind, [])
    )
    owners = [rng.choice(receiving or services) for _ in range(count)]
    return Draws(nhs, owners, referrals, services, gp or services, services_by_kind)


def check_route(draws: Draws) -> None:
    """The load has the services the transaction's referrals need."""
    senders = draws.services_by_kind.get(SENDING_KIND, [])
    receivers = draws.services_by_kind.get(RECEIVING_KIND, [])
    allowed = generate.ROUTES.allows(SENDING_KIND, RECEIVING_KIND)
    if not allowed or not senders or len(receivers) < REFERRALS_PER_TRANSACTION:
        raise BenchError(
            f"the transaction refers from a '{SENDING_KIND}' service to "
            f"{REFERRALS_PER_TRANSACTION} distinct '{RECEIVING_KIND}' services, but the load has "
            f"{len(senders)} and {len(receivers)} of them (HealthcareService.type from "
            f"{SERVICE_KIND}), and the routes "
            f"{'allow' if allowed else 'do not allow'} it: reload it with python -m bench.generate"
        )


async def make_requesters(base_url: str, draws: Draws, count: int = 4) -> list[str]:
    """PractitionerRoles working in ``count`` of the GP services, made through the API: the
    senders of the transaction's referrals. Their ids."""
    roles = []
    async with httpx.AsyncClient(base_url=base_url, timeout=60, trust_env=False) as client:
        for service_id in draws.services_by_kind[SENDING_KIND][:count]:
            role = {
                "resourceType": "PractitionerRole",
                "active": True,
                "healthcareService": [{"reference": f"HealthcareService/{service_id}"}],
            }
            response = await client.post(
                "/PractitionerRole",
                content=orjson.dumps(role),
                headers={"Content-Type": FHIR_JSON, "Accept": FHIR_JSON},
            )
            if response.status_code != 201:
                raise BenchError(
                    f"POST /PractitionerRole: {response.status_code} {response.text[:300]}"
                )
            roles.append(str(response.json()["id"]))
    return roles


# -- the requests -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    method: str
    url: str
    body: bytes | None = None


def search_call(scenario: str, draws: Draws, i: int) -> Call:
    if scenario == "bare":
        return Call("GET", "/_bench/bare")
    if scenario == "chained":
        nhs = draws.nhs_numbers[i % len(draws.nhs_numbers)]
        query = urlencode({"patient.identifier": f"{NHS_NUMBER_SYSTEM}|{nhs}"})
        return Call("GET", f"/ServiceRequest?{query}")
    if scenario == "worklist":
        owner = draws.owners[i % len(draws.owners)]
        return Call(
            "GET", f"/Task?{urlencode({'owner': f'HealthcareService/{owner}'})}&status=requested"
        )
    if scenario == "revinclude":
        referral = draws.referrals[i % len(draws.referrals)]
        return Call("GET", f"/ServiceRequest?_id={referral}&_revinclude=Task:focus")
    raise ValueError(scenario)


class Transactions:
    """Transaction Bundles of 20 entries, each about a new person (a new NHS number)."""

    def __init__(self, draws: Draws, seed: int, requesters: Sequence[str]) -> None:
        self.rng = random.Random(seed ^ 0x5EED)
        self.directory = generate.Directory.from_ids(
            seed, draws.gp_practices, draws.gp_practices, draws.services
        )
        self.requesters = list(requesters)
        # The receiving services, busy and quiet (Zipf weights, as the load's).
        self.receivers = list(draws.services_by_kind[RECEIVING_KIND])
        self.rng.shuffle(self.receivers)
        self.weights = [1.0 / (1 + n) ** 0.8 for n in range(len(self.receivers))]
        # NHS numbers no load uses (loads use 900,000,000 + 2n): a fresh range per run.
        self.base = 500_000_000 + self.rng.randrange(0, 150_000_000, 2) + (os.getpid() % 997) * 2
        self.made = 0

    def call(self) -> Call:
        rng, d = self.rng, self.directory
        n = self.made
        self.made += 1
        now = datetime.now(UTC)
        patient_urn = f"urn:uuid:{uuid.UUID(int=rng.getrandbits(128), version=4)}"
        nhs = generate.nhs_number(n, base=self.base)
        person = generate.patient(d, 0, rng, now)
        person["identifier"][0]["value"] = nhs
        entries: list[dict[str, Any]] = [
            {
                "fullUrl": patient_urn,
                "resource": person,
                "request": {
                    "method": "POST",
                    "url": "Patient",
                    "ifNoneExist": urlencode({"identifier": f"{NHS_NUMBER_SYSTEM}|{nhs}"}),
                },
            }
        ]
        referral_urns = []
        for k, service_id in enumerate(self._performers()):
            urn = f"urn:uuid:{uuid.UUID(int=rng.getrandbits(128), version=4)}"
            referral_urns.append(urn)
            document = generate.referral(
                n * REFERRALS_PER_TRANSACTION + k,
                rng,
                now,
                kind=RECEIVING_KIND,
                subject=patient_urn,
                requester=f"PractitionerRole/{rng.choice(self.requesters)}",
                performer=f"HealthcareService/{service_id}",
            )
            entries.append(
                {
                    "fullUrl": urn,
                    "resource": document,
                    "request": {"method": "POST", "url": "ServiceRequest"},
                }
            )
        for _ in range(16):
            document = generate.observation(
                d, rng, now - timedelta(days=rng.randint(0, 30)), "x", None
            )
            document["subject"] = {"reference": patient_urn}
            document["basedOn"] = [{"reference": rng.choice(referral_urns)}]
            entries.append(
                {
                    "fullUrl": f"urn:uuid:{uuid.UUID(int=rng.getrandbits(128), version=4)}",
                    "resource": document,
                    "request": {"method": "POST", "url": "Observation"},
                }
            )
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
        return Call("POST", "/", orjson.dumps(bundle))

    def _performers(self) -> list[str]:
        """Distinct receiving services: one person is not referred to a service twice."""
        chosen: list[str] = []
        while len(chosen) < REFERRALS_PER_TRANSACTION:
            service = self.rng.choices(self.receivers, self.weights)[0]
            if service not in chosen:
                chosen.append(service)
        return chosen


# -- serving ----------------------------------------------------------------------------------


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    base_url: str
    log: Path


@contextmanager
def serve(
    database_url: str, workers: int, log: Path, *, app: str, source: Path
) -> Iterator[Server]:
    """uvicorn serving ``app`` from the tree ``source`` on a free loopback port."""
    port = _free_port()
    base_url = f"http://127.0.0.1:{port}"
    env = dict(os.environ)
    env |= {
        "WAYMARK_DATABASE_URL": database_url,
        "WAYMARK_BASE_URL": base_url,
        "WAYMARK_LOG_LEVEL": "warning",
        # Loopback only; the app refuses auth=off elsewhere. Ignored by versions without auth.
        "WAYMARK_AUTH": env.get("WAYMARK_AUTH", "off"),
        "PYTHONPATH": os.pathsep.join([str(source), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    }
    command = [
        *_uvicorn(),
        app,
        "--factory",
        "--workers",
        str(workers),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--no-access-log",
        "--log-level",
        "warning",
        "--app-dir",
        str(source),
    ]
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            command,
            cwd=source,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait_healthy(process, base_url, log, workers)
        yield Server(process, base_url, log)
    finally:
        _stop(process)


# -- measuring --------------------------------------------------------------------------------

# "postgres: <user> <database> <host>(<port>) <state>": a backend; parallel workers, the
# checkpointer, WAL writer... are left out (the server is shared with other tenants).
_BACKEND_TITLE = re.compile(r"^postgres: (?:[^:]+: )?\S+ (\S+) (?:\S+\(\d+\)|\[local\])")


def _cpu_snapshot(root: int, database: str) -> tuple[float, dict[int, float]]:
    """CPU seconds of ``root`` and its children (uvicorn), and of each backend of ``database``."""
    server = 0.0
    postgres: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        stat = _proc_stat(pid)
        if stat is None:
            continue
        if pid == root or stat[0] == root:
            server += stat[1]
            continue
        try:
            if (entry / "comm").read_text().strip() != "postgres":
                continue
            title = (entry / "cmdline").read_text().replace("\0", " ").strip()
        except OSError:
            continue
        backend = _BACKEND_TITLE.match(title)
        if backend is not None and backend.group(1) == database:
            postgres[pid] = stat[1]
    return server, postgres


def _postgres_delta(before: dict[int, float], after: dict[int, float]) -> float:
    return sum(seconds - before.get(pid, 0.0) for pid, seconds in after.items())


@dataclass
class Block:
    latencies_ms: list[float]
    wall: float
    statuses: dict[str, int]
    first_error: str
    server_cpu: float
    postgres_cpu: float
    system_cpu: float


async def run_block(
    client: httpx.AsyncClient,
    calls: Sequence[Call],
    concurrency: int,
    server_pid: int,
    database: str,
) -> Block:
    queue = list(reversed(calls))
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    errors: list[str] = []

    async def worker() -> None:
        while queue:
            call = queue.pop()
            headers = {"Accept": FHIR_JSON}
            if call.body is not None:
                headers["Content-Type"] = FHIR_JSON
            start = time.perf_counter()
            try:
                response = await client.request(
                    call.method, call.url, content=call.body, headers=headers
                )
                status = str(response.status_code)
                body = response.content
            except httpx.HTTPError as error:
                status, body = "error", repr(error).encode()
            latencies.append((time.perf_counter() - start) * 1000)
            statuses[status] = statuses.get(status, 0) + 1
            if not status.startswith("2") and not errors:
                errors.append(f"{status} {call.method} {call.url[:120]}: {body[:300]!r}")

    server_cpu, postgres_cpu = _cpu_snapshot(server_pid, database)
    busy = _system_busy()
    start = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.monotonic() - start
    server_after, postgres_after = _cpu_snapshot(server_pid, database)
    return Block(
        latencies,
        wall,
        statuses,
        errors[0] if errors else "",
        server_after - server_cpu,
        _postgres_delta(postgres_cpu, postgres_after),
        _system_busy() - busy,
    )


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


@dataclass
class Summary:
    scenario: str
    requests: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    rps: float
    round_p50s: list[float]
    server_ms_per_request: float
    postgres_ms_per_request: float
    system_cores: float
    non2xx: int
    first_error: str
    verdict: str = ""


def summarise(scenario: str, blocks: Sequence[Block]) -> Summary:
    latencies = [v for b in blocks for v in b.latencies_ms]
    wall = sum(b.wall for b in blocks)
    non2xx = sum(n for b in blocks for s, n in b.statuses.items() if not s.startswith("2"))
    summary = Summary(
        scenario=scenario,
        requests=len(latencies),
        p50_ms=percentile(latencies, 50),
        p90_ms=percentile(latencies, 90),
        p99_ms=percentile(latencies, 99),
        max_ms=max(latencies),
        rps=len(latencies) / wall if wall else 0.0,
        round_p50s=[round(statistics.median(b.latencies_ms), 2) for b in blocks],
        server_ms_per_request=1000 * sum(b.server_cpu for b in blocks) / len(latencies),
        postgres_ms_per_request=1000 * sum(b.postgres_cpu for b in blocks) / len(latencies),
        system_cores=sum(b.system_cpu for b in blocks) / wall if wall else 0.0,
        non2xx=non2xx,
        first_error=next((b.first_error for b in blocks if b.first_error), ""),
    )
    if scenario in SEARCHES:
        met = summary.p50_ms < TARGET_P50_MS
        summary.verdict = f"p50 target < {TARGET_P50_MS:.0f} ms: {'MET' if met else 'MISSED'}"
    return summary


def print_table(title: str, summaries: Sequence[Summary]) -> None:
    print()
    print(title)
    header = (
        f"{'scenario':<32} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>8} {'n':>5} {'non-2xx':>7} "
        f"{'ms/req srv/pg':>14} {'cores all':>9}  round p50s / target"
    )
    print(header)
    print("-" * len(header))
    for s in summaries:
        per_request = f"{s.server_ms_per_request:.2f}/{s.postgres_ms_per_request:.2f}"
        rounds = "/".join(f"{v:.1f}" for v in s.round_p50s)
        print(
            f"{LABELS[s.scenario]:<32} {s.p50_ms:>8.2f} {s.p99_ms:>8.2f} {s.rps:>8.1f} "
            f"{s.requests:>5} {s.non2xx:>7} {per_request:>14} {s.system_cores:>9.2f}  "
            f"{rounds}  {s.verdict}"
        )
        if s.first_error:
            print(f"   first error: {s.first_error}")


# -- checking the answers against the documents ---------------------------------------------


def _entries(body: bytes) -> tuple[list[str], list[tuple[str, str]]]:
    bundle = orjson.loads(body)
    matches, included = [], []
    for entry in bundle.get("entry", []):
        resource = entry["resource"]
        if entry.get("search", {}).get("mode") == "include":
            included.append((resource["resourceType"], resource["id"]))
        else:
            matches.append(resource["id"])
    return matches, included


_JSON = "convert_from(content, 'UTF8')::jsonb"


async def verify(base_url: str, dsn: str, draws: Draws, samples: int) -> list[str]:
    """Compare a few answers of each search with what the stored JSON says (no index used)."""
    problems = []
    conn = await asyncpg.connect(dsn, timeout=10, server_settings={"statement_timeout": "0"})
    try:
        async with httpx.AsyncClient(base_url=base_url, timeout=60, trust_env=False) as client:
            for i in range(samples):
                call = search_call("chained", draws, i)
                nhs = draws.nhs_numbers[i]
                expected = [
                    r[0]
                    for r in await conn.fetch(
                        f"SELECT id FROM resource WHERE resource_type = 'ServiceRequest' "
                        f"AND NOT deleted AND {_JSON}->'subject'->>'reference' IN ("
                        f"  SELECT 'Patient/' || id FROM resource WHERE resource_type = 'Patient'"
                        f"  AND NOT deleted AND {_JSON} @> jsonb_build_object('identifier',"
                        f"  jsonb_build_array(jsonb_build_object('system', $1::text, "
                        f"'value', $2::text)))) ORDER BY id",
                        NHS_NUMBER_SYSTEM,
                        nhs,
                    )
                ]
                got, _ = _entries((await client.get(call.url)).content)
                if got != expected[:50]:
                    problems.append(f"chained {nhs}: app {got} but the documents say {expected}")

                call = search_call("worklist", draws, i)
                owner = draws.owners[i]
                expected = [
                    r[0]
                    for r in await conn.fetch(
                        f"SELECT id FROM resource WHERE resource_type = 'Task' AND NOT deleted "
                        f"AND {_JSON}->'owner'->>'reference' = $1 "
                        f"AND {_JSON}->>'status' = 'requested' ORDER BY id LIMIT 50",
                        f"HealthcareService/{owner}",
                    )
                ]
                got, _ = _entries((await client.get(call.url)).content)
                if got != expected:
                    problems.append(f"worklist {owner}: app {got} but the documents say {expected}")

                call = search_call("revinclude", draws, i)
                referral = draws.referrals[i]
                expected_tasks = sorted(
                    ("Task", r[0])
                    for r in await conn.fetch(
                        f"SELECT id FROM resource WHERE resource_type = 'Task' AND NOT deleted "
                        f"AND {_JSON}->'focus'->>'reference' = $1",
                        f"ServiceRequest/{referral}",
                    )
                )
                got, included = _entries((await client.get(call.url)).content)
                if got != [referral] or sorted(included) != expected_tasks:
                    problems.append(
                        f"revinclude {referral}: app {got} + {included}, "
                        f"the documents say {expected_tasks}"
                    )
    finally:
        await conn.close()
    return problems


# -- the plans the app's statements got -------------------------------------------------------

_EXPLAIN_SETTINGS = {
    "session_preload_libraries": "auto_explain",
    "auto_explain.log_min_duration": "0",
    "auto_explain.log_analyze": "on",
    "auto_explain.log_buffers": "on",
    "auto_explain.log_timing": "on",
    "auto_explain.log_verbose": "off",
    "log_min_duration_statement": "0",
}


async def _alter_database(admin_dsn: str, database: str, reset: bool) -> None:
    conn = await asyncpg.connect(admin_dsn, timeout=10)
    try:
        for name, value in _EXPLAIN_SETTINGS.items():
            if reset:
                await conn.execute(f'ALTER DATABASE "{database}" RESET {name}')
            else:
                await conn.execute(f"ALTER DATABASE \"{database}\" SET {name} = '{value}'")
    finally:
        await conn.close()


_LOG_ENTRY = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+ \w+ \[(\d+)\] (\S*)@(\S*) ")


def _log_entries(text: str, database: str) -> list[str]:
    """The server log's entries (a line and its continuation lines) from ``database``."""
    entries: list[str] = []
    keep = False
    for line in text.splitlines():
        match = _LOG_ENTRY.match(line)
        if match:
            keep = match.group(3) == database
            if keep:
                rest = line[match.end() :]
                if rest.startswith(("DETAIL:", "HINT:", "CONTEXT:", "STATEMENT:")) and entries:
                    entries[-1] += "\n\t" + rest  # belongs to the entry before it
                else:
                    entries.append(line)
        elif keep and entries:
            entries[-1] += "\n" + line
    return entries


def _plan_summary(entry: str) -> str:
    """One line about an auto_explain plan: its duration, scans and the indexes they use."""
    duration = re.search(r"duration: ([\d.]+) ms\s+plan:", entry)
    nodes = re.findall(
        r"((?:Parallel )?(?:Index Only Scan|Index Scan|Bitmap Index Scan|Seq Scan|Bitmap Heap "
        r"Scan)(?: Backward)?)(?: using (\S+))? on (\S+)",
        entry,
    )
    scans = ", ".join(
        f"{kind} {index or ''} on {table}".replace("  ", " ") for kind, index, table in nodes
    )
    text = re.search(r"Query Text:\s*(\w+)(?:.*?\b(INSERT|UPDATE|DELETE)\b)?", entry, re.DOTALL)
    statement = (text.group(2) or text.group(1)).upper() if text else "?"
    generic = " (generic plan: $n in conditions)" if re.search(r"Cond: .*\$\d", entry) else ""
    ms = float(duration.group(1)) if duration else 0.0
    return f"{statement} {ms:.2f} ms{generic}" + (f": {scans}" if scans else "")


async def explain(
    options: argparse.Namespace, database_url: str, draws: Draws, log_path: Path
) -> tuple[str, dict[str, list[str]]]:
    """Serve with auto_explain on, send each search in turn, and read the plans from the log."""
    server_log = Path(options.server_log)
    try:
        await asyncio.to_thread(_read_log, server_log, 0, 1)
    except OSError as error:
        return f"(no plans: cannot read the server log {server_log}: {error})\n", {}
    admin_dsn = generate._dsn(options.postgres_url)
    await _alter_database(admin_dsn, options.database, reset=False)
    report: list[str] = []
    summaries: dict[str, list[str]] = {}
    try:
        with serve(database_url, 1, log_path, app=options.app, source=options.source) as server:
            async with httpx.AsyncClient(
                base_url=server.base_url, timeout=60, trust_env=False
            ) as client:
                for scenario in SEARCHES:
                    offset = await asyncio.to_thread(_log_size, server_log)
                    calls = [
                        search_call(scenario, draws, len(draws.nhs_numbers) - 1 - i)
                        for i in range(options.explain_requests)
                    ]
                    for call in calls:
                        response = await client.get(call.url, headers={"Accept": FHIR_JSON})
                        if response.status_code != 200:
                            raise BenchError(f"{call.url}: {response.status_code}")
                    await asyncio.sleep(0.3)  # the backend has logged before it answered
                    text = await asyncio.to_thread(_read_log, server_log, offset)
                    entries = _log_entries(text, options.database)
                    plans = [e for e in entries if "plan:" in e]
                    per_request = max(1, len(plans) // max(1, len(calls)))
                    first = plans[:per_request]
                    last = plans[-per_request:]
                    report.append(
                        f"===== {LABELS[scenario]}: {calls[0].method} {calls[0].url}\n"
                        f"{len(calls)} requests one after another on one connection; "
                        f"{len(plans)} plans logged ({per_request} statements a request).\n"
                    )
                    report.append("----- first request (custom plans):\n")
                    report += [_strip_prefix(e) + "\n" for e in first]
                    report.append(f"----- request {len(calls)} ({calls[-1].url}):\n")
                    report += [_strip_prefix(e) + "\n" for e in last]
                    statements = [e for e in entries if "execute" in e and "plan:" not in e]
                    if statements:
                        report.append("----- the statements of the last request, as logged:\n")
                        report += [_strip_prefix(e) + "\n" for e in statements[-per_request:]]
                    summaries[scenario] = [f"first: {_plan_summary(e)}" for e in first] + [
                        f"request {len(calls)}: {_plan_summary(e)}" for e in last
                    ]
    finally:
        await _alter_database(admin_dsn, options.database, reset=True)
    return "\n".join(report), summaries


def _log_size(path: Path) -> int:
    return path.stat().st_size


def _read_log(path: Path, offset: int, limit: int = -1) -> str:
    with path.open("rb") as log:
        log.seek(offset)
        return log.read(limit).decode(errors="replace")


def _strip_prefix(entry: str) -> str:
    return _LOG_ENTRY.sub("", entry, count=1)


# -- main -------------------------------------------------------------------------------------


async def measure(
    options: argparse.Namespace, server: Server, draws: Draws, scenarios: Sequence[str]
) -> dict[str, list[Block]]:
    requesters = await make_requesters(server.base_url, draws) if "transaction" in scenarios else []
    transactions = Transactions(draws, options.seed, requesters) if requesters else None
    per_round = max(1, options.requests // options.rounds)
    tx_per_round = max(1, options.transactions // options.rounds)
    blocks: dict[str, list[Block]] = {s: [] for s in scenarios}
    limits = httpx.Limits(max_connections=options.concurrency * 2)
    async with httpx.AsyncClient(
        base_url=server.base_url, timeout=60, trust_env=False, limits=limits
    ) as client:
        # Warm-up: connections, the app's first requests, the pages the searches touch.
        for scenario in scenarios:
            if scenario == "transaction":
                assert transactions is not None
                calls = [transactions.call() for _ in range(max(2, options.warmup // 10))]
            else:
                offset = options.requests + 1
                calls = [search_call(scenario, draws, offset + i) for i in range(options.warmup)]
            await run_block(
                client, calls, options.concurrency, server.process.pid, options.database
            )
        for r in range(options.rounds):
            for scenario in scenarios:
                if scenario == "transaction":
                    assert transactions is not None
                    calls = [transactions.call() for _ in range(tx_per_round)]
                else:
                    calls = [
                        search_call(scenario, draws, r * per_round + i) for i in range(per_round)
                    ]
                block = await run_block(
                    client, calls, options.concurrency, server.process.pid, options.database
                )
                blocks[scenario].append(block)
                print(
                    f"   [round {r + 1}/{options.rounds}] {scenario:<11} "
                    f"p50 {statistics.median(block.latencies_ms):7.2f} ms  "
                    f"max {max(block.latencies_ms):8.2f} ms  "
                    f"{len(block.latencies_ms) / block.wall:7.1f} req/s"
                    + (f"  {block.statuses}" if set(block.statuses) - {"200"} else ""),
                    flush=True,
                )
    return blocks


def _git_state(source: Path) -> dict[str, str]:
    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", *args], cwd=source, capture_output=True, text=True, check=False
        )
        return done.stdout.strip()

    return {
        "source": str(source),
        "commit": git("rev-parse", "--short", "HEAD") or "(not a git tree)",
        "changed_app_files": str(len(git("status", "--short", "app").splitlines())),
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.search_scale",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    parser.add_argument("--database", default=generate.DEFAULT_DATABASE)
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("WAYMARK_BENCH_POSTGRES_URL", generate.DEFAULT_POSTGRES_URL),
        help="admin URL of the server holding the database (env WAYMARK_BENCH_POSTGRES_URL)",
    )
    parser.add_argument("--requests", type=int, default=400, help="per search (default 400)")
    parser.add_argument("--transactions", type=int, default=200, help="default 200")
    parser.add_argument("--rounds", type=int, default=4, help="interleaved rounds (default 4)")
    parser.add_argument("--concurrency", type=int, default=2, help="clients (default 2)")
    parser.add_argument("--warmup", type=int, default=40, help="requests per search to warm up")
    parser.add_argument("--workers", type=int, default=2, help="uvicorn workers (default 2)")
    parser.add_argument("--seed", type=int, default=1, help="parameter draws (default 1)")
    parser.add_argument("--verify", type=int, default=2, help="answers checked per search")
    parser.add_argument(
        "--explain-requests", type=int, default=8, help="requests per search under auto_explain"
    )
    parser.add_argument("--no-explain", action="store_true", help="skip the plans")
    parser.add_argument("--server-log", default=DEFAULT_SERVER_LOG, help="PostgreSQL's log file")
    parser.add_argument(
        "--scenarios", default=",".join(SCENARIOS), help=f"subset of {','.join(SCENARIOS)}"
    )
    parser.add_argument("--app", default=DEFAULT_APP, help="uvicorn factory (%(default)s)")
    parser.add_argument(
        "--source",
        type=Path,
        default=ROOT,
        help="the tree to serve the app from (a checkout of another commit, say)",
    )
    options = parser.parse_args(argv)
    unknown = set(options.scenarios.split(",")) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    if options.requests < options.rounds or options.concurrency < 1:
        parser.error("--requests must be at least --rounds, --concurrency at least 1")
    options.source = options.source.resolve()
    return options


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    dsn = generate._dsn(options.postgres_url, options.database)
    database_url = generate.sqlalchemy_url(options.postgres_url, options.database)
    if not asyncio.run(generate.database_exists(options.postgres_url, options.database)):
        print(
            f"no database {options.database}: run python -m bench.generate first", file=sys.stderr
        )
        return 2
    sizes = asyncio.run(generate.table_sizes(dsn))
    count = sizes["tables"]["resource"]["rows"]
    scenarios = [s for s in SCENARIOS if s in options.scenarios.split(",")]
    draws = asyncio.run(draw(dsn, options.seed, max(options.requests + options.warmup + 50, 500)))
    if "transaction" in scenarios:
        check_route(draws)
    seeded = loadrun.waymark("seed", database_url=database_url).strip()
    print(
        f"Waymark scale benchmark on {options.database}: {count:,} resources, "
        f"{options.workers} uvicorn workers, {options.concurrency} clients, "
        f"{options.requests} requests per search and {options.transactions} transactions in "
        f"{options.rounds} interleaved rounds; {os.cpu_count()} CPUs, load average "
        f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}; app from {options.source}",
        flush=True,
    )
    print(f"   waymark seed: {seeded.splitlines()[0] if seeded else '(nothing said)'}", flush=True)
    background = _background_load()
    print(
        f"   before starting, other processes kept {background:.2f} of {os.cpu_count()} cores busy"
        + ("  (WARNING: the machine is not idle)" if background > 0.3 else ""),
        flush=True,
    )
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    log = WORK_DIR / "server-scale.log"
    problems: list[str] = []
    with serve(
        database_url, options.workers, log, app=options.app, source=options.source
    ) as server:
        if options.verify:
            problems = asyncio.run(verify(server.base_url, dsn, draws, options.verify))
            print(
                f"   answers checked against the stored documents: "
                f"{'all agree' if not problems else 'DISAGREE'}",
                flush=True,
            )
            for problem in problems:
                print(f"   {problem[:400]}")
        blocks = asyncio.run(measure(options, server, draws, scenarios))
        if server.process.poll() is not None:
            raise BenchError(f"the server died:\n{_tail(log)}")
    summaries = [summarise(s, blocks[s]) for s in scenarios]
    print_table(
        f"{count:,} resources, {options.workers} workers, {options.concurrency} clients",
        summaries,
    )
    print(
        "p50/p99 over every request of the scenario; round p50s: the median of each round; "
        "ms/req: CPU time per response of uvicorn and of this database's PostgreSQL backends; "
        "cores all: the machine's busy cores (other tenants included)"
    )
    plans: dict[str, list[str]] = {}
    explain_path = RESULTS_DIR / f"scale-explain-{count}-{stamp}.txt"
    if not options.no_explain:
        text, plans = asyncio.run(
            explain(options, database_url, draws, WORK_DIR / "server-scale-explain.log")
        )
        explain_path.write_text(
            f"Plans of the app's own statements (auto_explain, ANALYZE, BUFFERS) on "
            f"{options.database}, {count:,} resources, {stamp}\n\n{text}"
        )
        print(
            "\nPlans (auto_explain on the app's connection; full text in "
            f"{explain_path.relative_to(ROOT)}):"
        )
        for scenario, lines in plans.items():
            print(f"  {LABELS[scenario]}")
            for line in lines:
                print(f"    {line}")
    path = RESULTS_DIR / f"scale-search-{count}-{stamp}.json"
    path.write_bytes(
        orjson.dumps(
            {
                "when": stamp,
                "database": options.database,
                "resources": count,
                "machine": {
                    "cpus": os.cpu_count(),
                    "python": platform.python_version(),
                    "platform": platform.platform(),
                    "background_cores": background,
                },
                "app": _git_state(options.source),
                "options": {k: str(v) for k, v in vars(options).items() if k != "postgres_url"},
                "summaries": [asdict(s) for s in summaries],
                "latencies_ms": {
                    s: [v for b in blocks[s] for v in b.latencies_ms] for s in scenarios
                },
                "plans": plans,
                "verify_problems": problems,
                "sizes": sizes,
            },
            option=orjson.OPT_INDENT_2,
        )
    )
    print(f"\nEvery request: {path.relative_to(ROOT)}")
    failed = problems or any(s.non2xx for s in summaries)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
