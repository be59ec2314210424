"""Waymark's load benchmark: ``python -m bench.crud`` (``make bench``).

For each database (a SQLite file under var/bench/, and a fresh PostgreSQL database created and
dropped here), the script migrates it, serves :func:`bench.app.create_bench_app` with uvicorn on
a free loopback port, seeds Patients, and drives each scenario with ``wrk`` (C, epoll; the
scenarios are Lua scripts in bench/lua/) for ``--duration`` seconds, ``--repeat`` times,
interleaving the scenarios so that slow drift on a shared machine hits them all alike:

* ``bare``      GET /_bench/bare: a fixed tiny body through the same app (baseline of read)
* ``validate``  POST /_bench/validate: validation only (baseline of create and update)
* ``read``      GET /Patient/{id} of a random seeded Patient
* ``create``    POST /Patient
* ``update``    PUT /Patient/{id} of a random seeded Patient
* ``crud``      each virtual user creates, reads, updates and deletes a Patient, in turn

It prints the medians (2xx responses per second, p50 and p99 latency), the ratios to the
baselines and the targets, and writes every run to bench/results/. Responses other than 2xx and
socket errors are counted and shown, never counted as throughput; any makes the exit status 1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
import orjson

from bench.fixtures import patient_json, update_template

ROOT = Path(__file__).resolve().parent.parent
LUA_DIR = ROOT / "bench" / "lua"
WORK_DIR = ROOT / "var" / "bench"
RESULTS_DIR = ROOT / "bench" / "results"
DEFAULT_APP = "bench.app:create_bench_app"
DEFAULT_POSTGRES_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

# Targets, on PostgreSQL with 2 workers.
READ_VS_BARE = 0.50
CREATE_VS_VALIDATE = 0.70
CRUD_RPS = 1300.0


@dataclass(frozen=True)
class Scenario:
    name: str
    label: str
    script: str
    files: tuple[str, ...]  # arguments of the Lua script, keys of Inputs.as_args()
    baseline: str | None = None
    target_ratio: float | None = None
    target_rps: float | None = None


SCENARIOS = (
    Scenario("bare", "bare endpoint", "bare.lua", ()),
    Scenario("validate", "validate-only", "validate.lua", ("patient",)),
    Scenario("read", "read-by-id", "read.lua", ("ids",), "bare", READ_VS_BARE),
    Scenario("create", "create", "create.lua", ("patient",), "validate", CREATE_VS_VALIDATE),
    Scenario("update", "update", "update.lua", ("ids", "update"), "validate"),
    Scenario("crud", "CRUD mix", "crud.lua", ("patient", "update"), target_rps=CRUD_RPS),
)
BY_NAME = {scenario.name: scenario for scenario in SCENARIOS}


@dataclass(frozen=True)
class Inputs:
    """Files the Lua scripts read, written before the load starts."""

    ids: Path
    patient: Path
    update: Path

    def as_args(self) -> dict[str, str]:
        return {"ids": str(self.ids), "patient": str(self.patient), "update": str(self.update)}


@dataclass
class Cpu:
    """CPU time (seconds) used during a run, by whom."""

    wall: float = 0.0
    server: float = 0.0  # the uvicorn master and its workers
    postgres: float = 0.0  # the benchmark database's backends and PostgreSQL's shared processes
    wrk: float = 0.0
    system: float = 0.0  # every process on the machine (PostgreSQL, the client, noise)

    def cores(self, seconds: float) -> float:
        return seconds / self.wall if self.wall else 0.0


@dataclass
class Run:
    scenario: str
    repetition: int
    requests: int
    ok_rps: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    non2xx: int
    socket_errors: int
    statuses: dict[str, int]
    errors: dict[str, int]
    first_error: str
    cpu: Cpu = field(default_factory=Cpu)

    @property
    def failed(self) -> bool:
        return self.non2xx > 0 or self.socket_errors > 0


@dataclass
class Summary:
    scenario: str
    ok_rps: float
    p50_ms: float
    p99_ms: float
    non2xx: int
    socket_errors: int
    runs_rps: list[float]
    server_cores: float
    postgres_cores: float
    wrk_cores: float
    system_cores: float
    server_ms_per_request: float  # CPU per response: steadier than req/s on a shared machine
    postgres_ms_per_request: float
    ratio: float | None = None
    verdict: str = ""


@dataclass
class DatabaseResult:
    database: str
    workers: int
    runs: list[Run]
    summaries: list[Summary]
    targets_met: bool | None
    background_cores: float  # busy cores before the server started: other tenants


class BenchError(RuntimeError):
    pass


# -- processes and CPU ------------------------------------------------------------------------


def _proc_stat(pid: int) -> tuple[int, float, float] | None:
    """(parent pid, CPU seconds, CPU seconds of its reaped children) of a process, from /proc."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    ticks = [int(value) for value in fields[11:15]]
    return int(fields[1]), (ticks[0] + ticks[1]) / CLOCK_TICKS, (ticks[2] + ticks[3]) / CLOCK_TICKS


def _cpu_snapshot(root: int, database: str | None) -> tuple[float, dict[int, float]]:
    """CPU seconds of ``root`` and its children (the uvicorn workers), and per PostgreSQL
    process that works for this benchmark (see :func:`_serves_benchmark`; none on SQLite)."""
    server = 0.0
    postgres: dict[int, float] = {}
    titles: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        stat = _proc_stat(pid)
        if stat is None:
            continue
        if pid == root or stat[0] == root:
            server += stat[1]
        elif database is not None:
            with suppress(OSError):
                if (entry / "comm").read_text().strip() == "postgres":
                    titles[pid] = (entry / "cmdline").read_text().replace("\0", " ").strip()
                    postgres[pid] = stat[1]
    if database is None:
        return server, {}
    ours = {pid for pid, title in titles.items() if _serves_benchmark(title, database, set())}
    return server, {
        pid: seconds
        for pid, seconds in postgres.items()
        if pid in ours or _serves_benchmark(titles[pid], database, ours)
    }


_BACKEND = re.compile(r"^postgres: (?:[^:]+: )?(\S+) (\S+) (?:\S+\(\d+\)|\[local\])")
_PARALLEL = re.compile(r"parallel worker for PID (\d+)")


def _serves_benchmark(title: str, database: str, ours: set[int]) -> bool:
    """Whether a postgres process (by its title) counts for the benchmark.

    The server is shared: other tenants' backends (another database, or a parallel worker
    of one) are left out; the benchmark database's backends and the shared background
    processes (postmaster, WAL writer, checkpointer...) are counted.
    """
    backend = _BACKEND.match(title)
    if backend is not None:
        return backend.group(2) == database
    parallel = _PARALLEL.search(title)
    if parallel is not None:
        return int(parallel.group(1)) in ours
    return True


def _postgres_delta(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU used by the counted PostgreSQL processes between two snapshots. A process that
    exited in between is not counted for that interval (the pool keeps the benchmark's
    connections open); one that started is counted whole."""
    return sum(seconds - before.get(pid, 0.0) for pid, seconds in after.items())


def _system_busy() -> float:
    """Busy CPU seconds of the whole machine since boot (all but idle and iowait)."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(values[:8]) - values[3] - values[4]) / CLOCK_TICKS


def _background_load(seconds: float = 2.0) -> float:
    """Cores kept busy by other processes, measured over ``seconds`` before the server starts."""
    busy = _system_busy()
    time.sleep(seconds)
    return (_system_busy() - busy) / seconds


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _uvicorn() -> list[str]:
    beside = Path(sys.executable).parent / "uvicorn"
    return [str(beside)] if beside.exists() else [sys.executable, "-m", "uvicorn"]


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    base_url: str
    log: Path
    database: str | None  # the PostgreSQL database served, for the CPU accounting


@contextmanager
def serve(
    database_url: str,
    workers: int,
    log: Path,
    app: str = DEFAULT_APP,
    env: Mapping[str, str] | None = None,
) -> Iterator[Server]:
    """uvicorn serving the bench app on a free loopback port; stopped when the block ends.
    ``env`` overrides the server's environment (say ``WAYMARK_AUTH=on``)."""
    port = _free_port()
    base_url = f"http://127.0.0.1:{port}"
    environment = dict(os.environ)
    environment |= {
        "WAYMARK_DATABASE_URL": database_url,
        "WAYMARK_BASE_URL": base_url,
        "WAYMARK_LOG_LEVEL": "warning",
        # The server is on loopback, where auth=off is allowed: the benchmark measures the
        # FHIR interactions (AuditEvents included), not the verification of access tokens.
        "WAYMARK_AUTH": "off",
    }
    environment |= dict(env or {})
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
    ]
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches this script, which then stops the server
        )
    try:
        _wait_healthy(process, base_url, log, workers)
        from sqlalchemy.engine import make_url

        url = make_url(database_url)
        database = url.database if url.get_backend_name() == "postgresql" else None
        yield Server(process, base_url, log, database)
    finally:
        _stop(process)


def _wait_healthy(process: subprocess.Popen[bytes], base_url: str, log: Path, workers: int) -> None:
    deadline = time.monotonic() + 90
    healthy = 0
    last = "no answer"
    with httpx.Client(base_url=base_url, timeout=5, trust_env=False) as client:
        # Several answers in a row, so that every worker is likely to have started.
        while healthy < 4 * workers:
            if process.poll() is not None:
                raise BenchError(f"uvicorn exited with {process.returncode}:\n{_tail(log)}")
            if time.monotonic() > deadline:
                raise BenchError(
                    f"uvicorn did not answer /health within 90 s (last: {last}):\n{_tail(log)}"
                )
            try:
                response = client.get("/health")
                last = f"{response.status_code} {response.text[:200]}"
                healthy = healthy + 1 if response.status_code == 200 else 0
            except httpx.TransportError as error:
                last = repr(error)
                healthy = 0
            time.sleep(0.25)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            # The group is the uvicorn master's own session: only the processes started here.
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


# -- databases --------------------------------------------------------------------------------


@contextmanager
def sqlite_database() -> Iterator[str]:
    path = WORK_DIR / "bench-sqlite.db"
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    yield f"sqlite+aiosqlite:///{path}"


async def _postgres_admin(admin_url: str, statement: str) -> None:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(text(statement))
    finally:
        await engine.dispose()


@contextmanager
def postgres_database(admin_url: str) -> Iterator[str]:
    """A fresh database on the server of ``admin_url``, dropped when the block ends."""
    from sqlalchemy.engine import make_url

    name = f"waymark_bench_{os.getpid()}"
    asyncio.run(_postgres_admin(admin_url, f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        asyncio.run(_postgres_admin(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


# -- seeding and load -------------------------------------------------------------------------


async def _seed(base_url: str, count: int, concurrency: int = 8) -> list[str]:
    body = patient_json()
    headers = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
    semaphore = asyncio.Semaphore(concurrency)

    async def one(client: httpx.AsyncClient) -> str:
        async with semaphore:
            response = await client.post("/Patient", content=body, headers=headers)
        if response.status_code != 201:
            raise BenchError(f"seeding: POST /Patient answered {response.status_code}")
        resource_id: str = orjson.loads(response.content)["id"]
        return resource_id

    async with httpx.AsyncClient(base_url=base_url, timeout=30, trust_env=False) as client:
        return list(await asyncio.gather(*(one(client) for _ in range(count))))


def prepare_inputs(base_url: str, label: str, seed: int) -> Inputs:
    ids = asyncio.run(_seed(base_url, seed))
    inputs = Inputs(
        ids=WORK_DIR / f"{label}-ids.txt",
        patient=WORK_DIR / "patient.json",
        update=WORK_DIR / "patient-update.tmpl",
    )
    inputs.ids.write_text("\n".join(ids) + "\n")
    inputs.patient.write_bytes(patient_json())
    inputs.update.write_bytes(update_template())
    return inputs


_RESULT_LINE = re.compile(r"^WAYMARK_BENCH (\{.*\})$", re.MULTILINE)


def run_wrk(
    wrk: str,
    scenario: Scenario,
    server: Server,
    inputs: Inputs,
    *,
    duration: int,
    connections: int,
    threads: int,
    repetition: int,
) -> Run:
    args = inputs.as_args()
    command = [
        wrk,
        "--threads",
        str(threads),
        "--connections",
        str(connections),
        "--duration",
        f"{duration}s",
        "--timeout",
        "10s",
        "--script",
        str(LUA_DIR / scenario.script),
        server.base_url,
        "--",
        *(args[name] for name in scenario.files),
    ]
    wall, wrk_cpu = time.monotonic(), _children_cpu()
    server_cpu, postgres_cpu = _cpu_snapshot(server.process.pid, server.database)
    busy = _system_busy()
    completed = subprocess.run(
        command, capture_output=True, text=True, timeout=duration + 60, check=False
    )
    server_after, postgres_after = _cpu_snapshot(server.process.pid, server.database)
    cpu = Cpu(
        wall=time.monotonic() - wall,
        server=server_after - server_cpu,
        postgres=_postgres_delta(postgres_cpu, postgres_after),
        wrk=_children_cpu() - wrk_cpu,
        system=_system_busy() - busy,
    )
    if server.process.poll() is not None:
        raise BenchError(f"the server died during {scenario.name}:\n{_tail(server.log)}")
    match = _RESULT_LINE.search(completed.stdout)
    if completed.returncode != 0 or match is None:
        raise BenchError(
            f"wrk failed on {scenario.name} (exit {completed.returncode}):\n"
            f"{completed.stdout}\n{completed.stderr}"
        )
    data: dict[str, Any] = json.loads(match.group(1))
    errors: dict[str, int] = data["errors"]
    return Run(
        scenario=scenario.name,
        repetition=repetition,
        requests=data["requests"],
        ok_rps=data["ok_rps"],
        rps=data["rps"],
        p50_ms=data["p50_ms"],
        p90_ms=data["p90_ms"],
        p99_ms=data["p99_ms"],
        max_ms=data["max_ms"],
        non2xx=data["non2xx"],
        # "status" is wrk's own count of responses above 399, already in non2xx.
        socket_errors=sum(v for k, v in errors.items() if k != "status"),
        statuses=data["statuses"],
        errors=errors,
        first_error=data["first_error"],
        cpu=cpu,
    )


# -- report -----------------------------------------------------------------------------------


def summarise(
    runs: Sequence[Run], scenarios: Sequence[Scenario], is_target_db: bool
) -> list[Summary]:
    labels = {scenario.name: scenario.label for scenario in scenarios}
    summaries: dict[str, Summary] = {}
    for scenario in scenarios:
        mine = [run for run in runs if run.scenario == scenario.name]
        if not mine:
            continue
        wall = sum(run.cpu.wall for run in mine)
        requests = max(1, sum(run.requests for run in mine))
        summaries[scenario.name] = Summary(
            scenario=scenario.name,
            ok_rps=statistics.median(run.ok_rps for run in mine),
            p50_ms=statistics.median(run.p50_ms for run in mine),
            p99_ms=statistics.median(run.p99_ms for run in mine),
            non2xx=sum(run.non2xx for run in mine),
            socket_errors=sum(run.socket_errors for run in mine),
            runs_rps=[round(run.ok_rps, 1) for run in mine],
            server_cores=sum(run.cpu.server for run in mine) / wall,
            postgres_cores=sum(run.cpu.postgres for run in mine) / wall,
            wrk_cores=sum(run.cpu.wrk for run in mine) / wall,
            system_cores=sum(run.cpu.system for run in mine) / wall,
            server_ms_per_request=1000 * sum(run.cpu.server for run in mine) / requests,
            postgres_ms_per_request=1000 * sum(run.cpu.postgres for run in mine) / requests,
        )
    for scenario in scenarios:
        summary = summaries.get(scenario.name)
        if summary is None:
            continue
        baseline = summaries.get(scenario.baseline or "")
        if baseline is not None and baseline.ok_rps > 0:
            summary.ratio = summary.ok_rps / baseline.ok_rps
            label = labels[baseline.scenario]
            summary.verdict = f"{summary.ratio:.2f} x {label}"
            if scenario.target_ratio is not None:
                met = summary.ratio >= scenario.target_ratio
                summary.verdict += f" (target >= {scenario.target_ratio:.2f}"
                summary.verdict += f": {'MET' if met else 'MISSED'})" if is_target_db else ")"
        if scenario.target_rps is not None:
            met = summary.ok_rps >= scenario.target_rps
            summary.verdict = f"target >= {scenario.target_rps:,.0f} req/s"
            summary.verdict += f": {'MET' if met else 'MISSED'}" if is_target_db else ""
    return list(summaries.values())


def targets_met(summaries: Sequence[Summary]) -> bool | None:
    verdicts = [s.verdict for s in summaries if "MET" in s.verdict or "MISSED" in s.verdict]
    if not verdicts:
        return None
    return all("MISSED" not in verdict for verdict in verdicts)


def print_table(
    title: str,
    summaries: Sequence[Summary],
    repeat: int,
    labels: Mapping[str, str] | None = None,
) -> None:
    """The medians; ``labels`` names the scenarios (default: this module's)."""
    names = labels or {scenario.name: scenario.label for scenario in SCENARIOS}
    width = max(14, *(len(names[s.scenario]) for s in summaries)) if summaries else 14
    print()
    print(title)
    header = (
        f"{'scenario':<{width}} {'2xx req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>7} "
        f"{'sockerr':>7} {'cores srv/pg/wrk/all':>20} {'ms/req srv/pg':>13}  "
        "ratio to baseline / target"
    )
    print(header)
    print("-" * len(header))
    for s in summaries:
        cores = (
            f"{s.server_cores:.2f}/{s.postgres_cores:.2f}/{s.wrk_cores:.2f}/{s.system_cores:.2f}"
        )
        per_request = f"{s.server_ms_per_request:.2f}/{s.postgres_ms_per_request:.2f}"
        print(
            f"{names[s.scenario]:<{width}} {s.ok_rps:>10,.1f} {s.p50_ms:>8.2f} "
            f"{s.p99_ms:>8.2f} {s.non2xx:>7} {s.socket_errors:>7} {cores:>20} "
            f"{per_request:>13}  {s.verdict}"
        )
    print(
        f"medians of {repeat} runs; req/s per run: "
        + "; ".join(f"{s.scenario} " + "/".join(f"{v:.0f}" for v in s.runs_rps) for s in summaries)
    )
    print(
        "cores: CPU cores busy during the runs: uvicorn (master and workers), PostgreSQL, wrk and "
        "the whole machine (other tenants included); ms/req: CPU time per response of uvicorn "
        "and of PostgreSQL"
    )


# -- main -------------------------------------------------------------------------------------


def bench_database(
    *,
    name: str,
    label: str,
    database_url: str,
    workers: int,
    options: argparse.Namespace,
    wrk: str,
    scenarios: Sequence[Scenario],
) -> DatabaseResult:
    from app.migrate import upgrade

    print(f"\n== {label}: migrating, starting uvicorn with {workers} worker(s)", flush=True)
    background = _background_load()
    print(
        f"   before starting, other processes kept {background:.2f} of {os.cpu_count()} cores busy"
        + ("  (WARNING: the machine is not idle; results will be low)" if background > 0.3 else ""),
        flush=True,
    )
    upgrade(database_url)
    log = WORK_DIR / f"server-{name}.log"
    with serve(database_url, workers, log, options.app) as server:
        print(f"   serving on {server.base_url}; seeding {options.seed} Patients", flush=True)
        inputs = prepare_inputs(server.base_url, name, options.seed)
        threads = max(1, min(options.threads, options.connections))
        common = {"duration": 0, "connections": options.connections, "threads": threads}
        if options.warmup > 0:
            print(f"   warm-up: {options.warmup} s per scenario", flush=True)
            for scenario in scenarios:
                common["duration"] = options.warmup
                warm = run_wrk(wrk, scenario, server, inputs, repetition=0, **common)
                if warm.failed:
                    print(f"   warm-up {scenario.name}: {_problems(warm)}", flush=True)
        runs: list[Run] = []
        common["duration"] = options.duration
        for repetition in range(1, options.repeat + 1):
            for scenario in scenarios:
                run = run_wrk(wrk, scenario, server, inputs, repetition=repetition, **common)
                runs.append(run)
                print(f"   [{name} {repetition}/{options.repeat}] {_progress(run)}", flush=True)
    summaries = summarise(runs, scenarios, is_target_db=name == "postgres")
    title = (
        f"{label}, {workers} uvicorn worker(s), {options.connections} connections, "
        f"{options.duration} s runs"
    )
    print_table(title, summaries, options.repeat)
    return DatabaseResult(name, workers, runs, summaries, targets_met(summaries), background)


def _progress(run: Run) -> str:
    cpu = run.cpu
    text = (
        f"{run.scenario:<9}{run.ok_rps:>9,.1f} req/s  p50 {run.p50_ms:7.2f} ms  "
        f"p99 {run.p99_ms:8.2f} ms  cores srv {cpu.cores(cpu.server):.2f} "
        f"pg {cpu.cores(cpu.postgres):.2f} wrk {cpu.cores(cpu.wrk):.2f} "
        f"all {cpu.cores(cpu.system):.2f}"
    )
    return text + (f"  {_problems(run)}" if run.failed else "")


def _problems(run: Run) -> str:
    text = f"non-2xx {run.non2xx} {run.statuses}, socket errors {run.errors}"
    if run.first_error:
        text += f"; first: {run.first_error[:200]!r}"
    return text


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.crud", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument("--duration", type=int, default=8, help="seconds per run (default 8)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per scenario (default 3)")
    parser.add_argument("--warmup", type=int, default=2, help="warm-up seconds per scenario")
    parser.add_argument("--connections", type=int, default=32, help="concurrent clients")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    parser.add_argument("--only", choices=("sqlite", "postgres"), help="one database only")
    parser.add_argument("--workers", type=int, default=2, help="uvicorn workers on PostgreSQL")
    parser.add_argument(
        "--sqlite-workers", type=int, default=2, help="uvicorn workers on SQLite (default 2)"
    )
    parser.add_argument("--seed", type=int, default=1000, help="Patients seeded for read/update")
    parser.add_argument(
        "--scenarios",
        default=",".join(BY_NAME),
        help=f"comma-separated subset of {','.join(BY_NAME)}",
    )
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("WAYMARK_BENCH_POSTGRES_URL", DEFAULT_POSTGRES_URL),
        help="admin URL used to create and drop the benchmark database "
        "(env WAYMARK_BENCH_POSTGRES_URL)",
    )
    parser.add_argument(
        "--app",
        default=DEFAULT_APP,
        help="uvicorn factory to serve, to compare a variant (default %(default)s)",
    )
    parser.add_argument(
        "--check-targets", action="store_true", help="exit 3 when a PostgreSQL target is missed"
    )
    options = parser.parse_args(argv)
    if options.duration < 1 or options.repeat < 1 or options.connections < 1:
        parser.error("--duration, --repeat and --connections must be at least 1")
    unknown = set(options.scenarios.split(",")) - set(BY_NAME)
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    return options


def _terminate(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally blocks: server, database


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    wrk = shutil.which("wrk")
    if wrk is None:
        print(
            "bench: the load generator 'wrk' is not installed.\n"
            "       Install it with:  apt-get install -y wrk   (Debian/Ubuntu package 'wrk')",
            file=sys.stderr,
        )
        return 2
    signal.signal(signal.SIGTERM, _terminate)
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    wanted = set(options.scenarios.split(","))
    scenarios = [scenario for scenario in SCENARIOS if scenario.name in wanted]
    version = subprocess.run([wrk, "--version"], capture_output=True, text=True, check=False)
    print(
        f"Waymark benchmark: {options.connections} connections, {options.duration} s x "
        f"{options.repeat} runs per scenario, wrk {options.threads} threads "
        f"({version.stdout.split(' [')[0].strip() or 'wrk'}), {os.cpu_count()} CPUs, "
        f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}"
    )
    results: list[DatabaseResult] = []
    databases = ("sqlite", "postgres") if options.only is None else (options.only,)
    for name in databases:
        if name == "sqlite":
            with sqlite_database() as url:
                results.append(
                    bench_database(
                        name="sqlite",
                        label="SQLite",
                        database_url=url,
                        workers=options.sqlite_workers,
                        options=options,
                        wrk=wrk,
                        scenarios=scenarios,
                    )
                )
        else:
            with postgres_database(options.postgres_url) as url:
                results.append(
                    bench_database(
                        name="postgres",
                        label="PostgreSQL",
                        database_url=url,
                        workers=options.workers,
                        options=options,
                        wrk=wrk,
                        scenarios=scenarios,
                    )
                )
    return report(results, options)


def report(results: Sequence[DatabaseResult], options: argparse.Namespace) -> int:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS_DIR / f"bench-{stamp}.json"
    path.write_bytes(
        orjson.dumps(
            {
                "when": stamp,
                "machine": {
                    "cpus": os.cpu_count(),
                    "python": platform.python_version(),
                    "platform": platform.platform(),
                },
                "options": {k: v for k, v in vars(options).items() if k != "postgres_url"},
                "results": [asdict(result) for result in results],
            },
            option=orjson.OPT_INDENT_2,
        )
    )
    print(f"\nEvery run: {path.relative_to(ROOT)}")
    failed = [
        f"{result.database}/{run.scenario}#{run.repetition}"
        for result in results
        for run in result.runs
        if run.failed
    ]
    for result in results:
        crud = next((s for s in result.summaries if s.scenario == "crud"), None)
        if crud is not None:
            print(
                f"{result.database}: CRUD mix {crud.ok_rps:,.1f} req/s (median) against the "
                f"target of {CRUD_RPS:,.0f} req/s"
                + (" (the target applies to PostgreSQL)" if result.database != "postgres" else "")
            )
    postgres = next((r for r in results if r.database == "postgres"), None)
    if postgres is not None and postgres.targets_met is not None:
        print(f"PostgreSQL targets: {'all met' if postgres.targets_met else 'NOT all met'}")
    if failed:
        print(f"Runs with non-2xx responses or socket errors: {', '.join(failed)}")
        return 1
    if options.check_targets and postgres is not None and postgres.targets_met is False:
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
