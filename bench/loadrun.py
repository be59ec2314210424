"""What the load benchmarks of the pathway (bench.auth, bench.referrals, bench.gates) share.

They drive ``wrk`` the way :mod:`bench.crud` does (its :func:`~bench.crud.run_wrk`, CPU
accounting, medians and table), against servers started by :func:`bench.crud.serve`, on a
fresh PostgreSQL database (:func:`bench.crud.postgres_database`) migrated and loaded with
``waymark seed-demo``. What is new here is the loop: each scenario names the server it runs
against and prepares its own inputs before every run (a fresh access token, a list of people
not yet referred, Tasks not yet moved), so scenarios on different servers or with inputs used
up by each request can still be interleaved.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson

from bench import crud, generate
from bench.crud import ROOT, Run, Scenario, Server, Summary

WORK_DIR = crud.WORK_DIR
RESULTS_DIR = crud.RESULTS_DIR
FHIR_JSON = "application/fhir+json"
SERVICE_SYSTEM = "https://fhir.waymark.org.uk/Id/service"


@dataclass(frozen=True)
class Files:
    """The arguments of a Lua script by name (what :func:`bench.crud.run_wrk` asks of its
    inputs)."""

    paths: dict[str, str]

    def as_args(self) -> dict[str, str]:
        return self.paths


@dataclass
class Plan:
    """A scenario, the server it runs against, and how to prepare a run of it."""

    scenario: Scenario
    server: Server
    #: Called before every run with the run's length in seconds; gives the Lua arguments.
    prepare: Callable[[int], Files]
    #: Called after every run (say, to note the rate, so the next run gets enough inputs).
    finished: Callable[[Run], None] = field(default=lambda run: None)


def add_arguments(parser: argparse.ArgumentParser, *, duration: int = 8) -> None:
    parser.add_argument("--duration", type=int, default=duration, help="seconds per run")
    parser.add_argument("--repeat", type=int, default=3, help="runs per scenario (default 3)")
    parser.add_argument("--warmup", type=int, default=2, help="warm-up seconds per scenario")
    parser.add_argument("--connections", type=int, default=32, help="concurrent clients")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    parser.add_argument("--workers", type=int, default=2, help="uvicorn workers (default 2)")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("WAYMARK_BENCH_POSTGRES_URL", crud.DEFAULT_POSTGRES_URL),
        help="admin URL used to create and drop the benchmark database "
        "(env WAYMARK_BENCH_POSTGRES_URL)",
    )
    parser.add_argument(
        "--check-targets", action="store_true", help="exit 3 when a target is missed"
    )


def check_arguments(parser: argparse.ArgumentParser, options: argparse.Namespace) -> None:
    if options.duration < 1 or options.repeat < 1 or options.connections < 1:
        parser.error("--duration, --repeat and --connections must be at least 1")
    options.threads = max(1, min(options.threads, options.connections))


def find_wrk() -> str:
    wrk = shutil.which("wrk")
    if wrk is None:
        print(
            "bench: the load generator 'wrk' is not installed (apt-get install -y wrk)",
            file=sys.stderr,
        )
        raise SystemExit(2)
    return wrk


def drive(wrk: str, plans: Sequence[Plan], options: argparse.Namespace, name: str) -> list[Run]:
    """Warm every scenario up, then run each ``--repeat`` times, interleaved."""
    common = {"connections": options.connections, "threads": options.threads}
    if options.warmup > 0:
        print(f"   warm-up: {options.warmup} s per scenario", flush=True)
        for plan in plans:
            files = plan.prepare(options.warmup)
            warm = crud.run_wrk(
                wrk,
                plan.scenario,
                plan.server,
                files,  # type: ignore[arg-type]
                duration=options.warmup,
                repetition=0,
                **common,
            )
            plan.finished(warm)
            if warm.failed:
                print(f"   warm-up {plan.scenario.name}: {crud._problems(warm)}", flush=True)
    runs: list[Run] = []
    for repetition in range(1, options.repeat + 1):
        for plan in plans:
            files = plan.prepare(options.duration)
            run = crud.run_wrk(
                wrk,
                plan.scenario,
                plan.server,
                files,  # type: ignore[arg-type]
                duration=options.duration,
                repetition=repetition,
                **common,
            )
            plan.finished(run)
            runs.append(run)
            print(f"   [{name} {repetition}/{options.repeat}] {crud._progress(run)}", flush=True)
    return runs


def report(
    title: str,
    runs: Sequence[Run],
    scenarios: Sequence[Scenario],
    options: argparse.Namespace,
) -> list[Summary]:
    summaries = crud.summarise(runs, scenarios, is_target_db=True)
    crud.print_table(title, summaries, options.repeat, {s.name: s.label for s in scenarios})
    return summaries


def exit_status(runs: Sequence[Run], summaries: Sequence[Summary], check: bool) -> int:
    failed = [f"{run.scenario}#{run.repetition}" for run in runs if run.failed]
    if failed:
        print(f"Runs with non-2xx responses or socket errors: {', '.join(failed)}")
        return 1
    met = crud.targets_met(summaries)
    if met is not None:
        print(f"Targets: {'all met' if met else 'NOT all met'}")
    return 3 if check and met is False else 0


def write_results(prefix: str, options: argparse.Namespace, payload: dict[str, Any]) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS_DIR / f"{prefix}-{stamp}.json"
    document = {
        "when": stamp,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "load_average": os.getloadavg(),
        },
        "options": {k: str(v) for k, v in vars(options).items() if k != "postgres_url"},
        **payload,
    }
    path.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2, default=_plain))
    print(f"\nEverything: {path.relative_to(ROOT)}")
    return path


def _plain(value: Any) -> Any:
    if hasattr(value, "__dataclass_fields__"):
        return asdict(value)
    return str(value)


# -- the database and the app's own commands -----------------------------------------------


def waymark(*args: str, database_url: str, env: dict[str, str] | None = None) -> str:
    """Run the ``waymark`` CLI on the benchmark database; its output."""
    beside = Path(sys.executable).parent / "waymark"
    command = [str(beside)] if beside.exists() else [sys.executable, "-m", "app.cli"]
    environment = dict(os.environ) | {"WAYMARK_DATABASE_URL": database_url} | (env or {})
    done = subprocess.run(
        [*command, *args],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
    )
    if done.returncode != 0:
        raise crud.BenchError(f"waymark {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def prepare_database(database_url: str) -> None:
    """Migrate, then load the definitions and the demo directory (``waymark seed-demo``)."""
    from app.migrate import upgrade

    upgrade(database_url)
    waymark("seed-demo", database_url=database_url)


def dsn(database_url: str) -> str:
    """The asyncpg DSN of a SQLAlchemy URL."""
    return generate._dsn(database_url)


def background(label: str) -> float:
    cores = crud._background_load()
    print(
        f"   before starting {label}, other processes kept {cores:.2f} of {os.cpu_count()} "
        "cores busy" + ("  (WARNING: the machine is not idle)" if cores > 0.3 else ""),
        flush=True,
    )
    return cores


# -- talking to the server -----------------------------------------------------------------


def client(base_url: str, token: str | None = None) -> httpx.Client:
    headers = {"Accept": FHIR_JSON}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.Client(base_url=base_url, timeout=60, trust_env=False, headers=headers)


def created(http: httpx.Client, document: dict[str, Any]) -> dict[str, Any]:
    """POST a resource; the stored resource (any answer but 201 is an error)."""
    response = http.post(
        f"/{document['resourceType']}",
        content=orjson.dumps(document),
        headers={"Content-Type": FHIR_JSON},
    )
    if response.status_code != 201:
        raise crud.BenchError(
            f"POST {document['resourceType']}: {response.status_code} {response.text[:400]}"
        )
    answer: dict[str, Any] = orjson.loads(response.content)
    return answer


def service(http: httpx.Client, code: str) -> dict[str, Any]:
    """The demo HealthcareService with identifier ``code`` (say solway-psy)."""
    response = http.get("/HealthcareService", params={"identifier": f"{SERVICE_SYSTEM}|{code}"})
    entries = orjson.loads(response.content).get("entry", []) if response.is_success else []
    if len(entries) != 1:
        raise crud.BenchError(f"no single demo service {code}: {response.status_code}")
    found: dict[str, Any] = entries[0]["resource"]
    return found


def role_for(http: httpx.Client, service_id: str) -> str:
    """A PractitionerRole whose healthcareService is the service: a referral's requester,
    the UK Core way; its id."""
    role = created(
        http,
        {
            "resourceType": "PractitionerRole",
            "active": True,
            "healthcareService": [{"reference": f"HealthcareService/{service_id}"}],
        },
    )
    return str(role["id"])


def referral(
    *,
    requester_role: str,
    performer: str,
    code: tuple[str, str],
    is_referral: bool = True,
    patient: str = "@@ID@@",
) -> dict[str, Any]:
    """A referral ServiceRequest as an EHR sends one. ``is_referral=False`` leaves out the
    one thing that makes it a referral (category 3457005), so that no pathway rule acts."""
    document: dict[str, Any] = {
        "resourceType": "ServiceRequest",
        "status": "active",
        "intent": "order",
        "priority": "routine",
        "code": {
            "coding": [{"system": "http://snomed.info/sct", "code": code[0], "display": code[1]}],
            "text": code[1],
        },
        "subject": {"reference": f"Patient/{patient}"},
        "authoredOn": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00"),
        "requester": {"reference": f"PractitionerRole/{requester_role}"},
        "performer": [{"reference": f"HealthcareService/{performer}"}],
        "reasonCode": [
            {
                "coding": [
                    {
                        "system": "http://snomed.info/sct",
                        "code": "66590003",
                        "display": "Alcohol dependence",
                    }
                ]
            }
        ],
        "note": [{"text": "Referred after review; consent to share recorded."}],
    }
    if is_referral:
        document["category"] = [
            {
                "coding": [
                    {
                        "system": "http://snomed.info/sct",
                        "code": "3457005",
                        "display": "Patient referral",
                    }
                ]
            }
        ]
    return document


async def post_each(
    base_url: str,
    path: str,
    template: bytes,
    ids: Sequence[str],
    *,
    concurrency: int = 32,
    marker: bytes = b"@@ID@@",
) -> tuple[int, dict[int, int], str]:
    """POST ``template`` once per id (its marker replaced), ``concurrency`` at a time, to load
    data through the API (hooks and all) rather than to measure: (seconds, statuses, first
    error). wrk cannot stop after a number of requests; this can."""
    import asyncio
    import time

    statuses: dict[int, int] = {}
    errors: list[str] = []
    queue = list(reversed(ids))
    limits = httpx.Limits(max_connections=concurrency)
    started = time.monotonic()
    async with httpx.AsyncClient(
        base_url=base_url, timeout=60, trust_env=False, limits=limits
    ) as http:

        async def worker() -> None:
            headers = {"Content-Type": FHIR_JSON, "Accept": FHIR_JSON, "Prefer": "return=minimal"}
            while queue:
                body = template.replace(marker, queue.pop().encode())
                response = await http.post(path, content=body, headers=headers)
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                if not response.is_success and not errors:
                    errors.append(f"{response.status_code} {response.text[:300]}")

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return round(time.monotonic() - started), statuses, errors[0] if errors else ""


async def _connection_room(admin_url: str) -> int:
    import asyncpg

    conn = await asyncpg.connect(dsn(admin_url), timeout=10)
    try:
        limit = int(await conn.fetchval("SHOW max_connections"))
        used = int(await conn.fetchval("SELECT count(*) FROM pg_stat_activity"))
        return limit - used
    finally:
        await conn.close()


def pool_for(admin_url: str, servers: int, workers: int) -> dict[str, str]:
    """Pool settings that let ``servers`` x ``workers`` fit the PostgreSQL server's free
    connections: none (the app's defaults, 32 + 8 overflow per worker) when they fit, else a
    smaller pool for every server alike, with no overflow, said aloud."""
    import asyncio

    from app.config import Settings

    defaults = Settings()
    wanted = defaults.db_pool_size + defaults.db_max_overflow
    room = asyncio.run(_connection_room(admin_url)) - 6  # this script's and a margin
    each = room // max(1, servers * workers)
    if each >= wanted:
        return {}
    print(
        f"   WARNING: {room} free PostgreSQL connections for {servers} x {workers} workers: "
        f"each worker's pool is {each} (no overflow) instead of the app's "
        f"{defaults.db_pool_size} + {defaults.db_max_overflow}",
        flush=True,
    )
    if each < 4:
        raise crud.BenchError("too few free PostgreSQL connections to run the benchmark")
    return {"WAYMARK_DB_POOL_SIZE": str(each), "WAYMARK_DB_MAX_OVERFLOW": "0"}
