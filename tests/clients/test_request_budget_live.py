"""One request cannot exhaust a worker's memory (issue 18, item 5): the real app under uvicorn,
in a process of its own, is sent the batches that once grew a server to 23.5 GB, and its peak
resident memory (VmHWM) is read from /proc when it has answered.

The data is small enough to seed in a few seconds, and large enough that the answers asked for
would be far over the budget: the test works out what they would have carried unbounded.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.config import Settings
from app.fhir.search.query import MAX_INCLUDED
from tests.api.bundle_builders import bundle, entry

#: The bound this test proves for one worker, whatever one request asks for.
PEAK_RSS_BOUND = 300 * 1024 * 1024
OBSERVATIONS = 600
NOTE_CHARACTERS = 4000
FHIR_JSON = {"Content-Type": "application/fhir+json"}
#: The server runs with the default limits.
DEFAULT_MAX_RESPONSE_BYTES: int = Settings.model_fields["max_response_bytes"].default
DEFAULT_MAX_REQUEST_RESOURCES: int = Settings.model_fields["max_request_resources"].default

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/status").exists(), reason="reads peak memory from /proc"
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def peak_rss(pid: int) -> int:
    """The process's peak resident set size (VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc status")


class ServerProcess:
    """``uvicorn app.main:create_app`` in a child process, default limits, auth off (loopback)."""

    def __init__(self, database_url: str, tmp_path: Path) -> None:
        self.port = _free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "WAYMARK_DATABASE_URL": database_url,
            "WAYMARK_BASE_URL": self.base_url,
            "WAYMARK_AUTH": "off",
            "WAYMARK_HOST": "127.0.0.1",
            "WAYMARK_TOKEN_KEY_FILE": str(tmp_path / "key.json"),
        }
        for limit in ("MAX_RESPONSE_BYTES", "MAX_REQUEST_RESOURCES", "MAX_PAGE_SIZE"):
            env.pop(f"WAYMARK_{limit}", None)
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "app.main:create_app",
                "--factory",
                "--host=127.0.0.1",
                f"--port={self.port}",
                "--log-level=warning",
                "--no-access-log",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    def wait_until_up(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                error = self.process.stderr.read() if self.process.stderr else b""
                raise RuntimeError(f"the server exited: {error.decode(errors='replace')}")
            try:
                if httpx.get(f"{self.base_url}/metadata", timeout=5).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        raise RuntimeError("the server did not start")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stderr is not None:
            self.process.stderr.close()


@pytest.fixture(scope="module")
def server(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    running = ServerProcess(database_url, tmp_path_factory.mktemp("budget"))
    try:
        running.wait_until_up()
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def seeded(server: ServerProcess) -> tuple[str, int]:
    """OBSERVATIONS Observations of one code of their own, each about one of ten Patients
    and carrying a long note; the code and the bytes one full page of them holds."""
    code = f"budget-{uuid.uuid4().hex[:8]}"
    with httpx.Client(base_url=server.base_url, headers=FHIR_JSON, timeout=120) as http:
        patients = bundle(
            *(entry("POST", "Patient", {"resourceType": "Patient"}) for _ in range(10))
        )
        made = http.post("/", json=patients)
        assert made.status_code == 200, made.text
        subjects = [e["response"]["location"].split("/_history")[0] for e in made.json()["entry"]]
        for start in range(0, OBSERVATIONS, 100):
            observations = bundle(
                *(
                    entry(
                        "POST",
                        "Observation",
                        {
                            "resourceType": "Observation",
                            "status": "final",
                            "code": {"coding": [{"system": "urn:waymark:test", "code": code}]},
                            "subject": {"reference": subjects[n % 10].split("/", 3)[3]},
                            "note": [{"text": f"{n:05d} " + "x" * NOTE_CHARACTERS}],
                        },
                    )
                    for n in range(start, start + 100)
                ),
                bundle_type="batch",
            )
            response = http.post("/", json=observations)
            assert response.status_code == 200, response.text[:500]
        page = http.get(
            "/Observation",
            params={"code": f"urn:waymark:test|{code}", "_count": "500", "_total": "accurate"},
        )
    assert page.status_code == 200
    assert page.json()["total"] == OBSERVATIONS
    return code, len(page.content)


def test_the_abusive_batch_is_refused_before_reading_and_memory_stays_bounded(
    server: ServerProcess, seeded: tuple[str, int]
) -> None:
    """1,000 entries of _count=500 with every include: refused from the entries alone."""
    code, page_bytes = seeded
    search = f"Observation?code=urn:waymark:test|{code}&_count=500&_include=Observation:*"
    abusive = bundle(*(entry("GET", search) for _ in range(1000)), bundle_type="batch")
    # Unbounded, each entry would carry a full page (and the Patients it names).
    assert 1000 * page_bytes > 50 * DEFAULT_MAX_RESPONSE_BYTES
    response = httpx.post(f"{server.base_url}/", json=abusive, headers=FHIR_JSON, timeout=120)
    assert response.status_code == 413, response.text[:500]
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    issue = outcome["issue"][0]
    assert issue["code"] == "too-costly"
    planned = 1000 * (500 + MAX_INCLUDED)
    assert f"up to {planned} resources" in issue["diagnostics"]
    assert "WAYMARK_MAX_REQUEST_RESOURCES" in issue["diagnostics"]
    assert peak_rss(server.process.pid) < PEAK_RSS_BOUND


def test_a_batch_within_the_plan_stops_at_the_byte_budget_and_memory_stays_bounded(
    server: ServerProcess, seeded: tuple[str, int]
) -> None:
    """30 entries of _count=500 pass the plan (45,000 resources at most) but would answer with
    far more than WAYMARK_MAX_RESPONSE_BYTES: reading stops there, and nothing is built."""
    code, page_bytes = seeded
    budget = DEFAULT_MAX_RESPONSE_BYTES
    search = f"Observation?code=urn:waymark:test|{code}&_count=500&_include=Observation:subject"
    entries = 30
    assert entries * (500 + MAX_INCLUDED) <= DEFAULT_MAX_REQUEST_RESOURCES
    assert entries * page_bytes > 2 * budget  # what the answer would have carried
    batch = bundle(*(entry("GET", search) for _ in range(entries)), bundle_type="batch")
    response = httpx.post(f"{server.base_url}/", json=batch, headers=FHIR_JSON, timeout=120)
    assert response.status_code == 400, response.text[:500]
    issue = response.json()["issue"][0]
    assert issue["code"] == "too-costly"
    assert f"more than {budget} bytes" in issue["diagnostics"]
    assert "WAYMARK_MAX_RESPONSE_BYTES" in issue["diagnostics"]
    assert len(response.content) < 10_000
    assert peak_rss(server.process.pid) < PEAK_RSS_BOUND
    # One such search alone is well within the budget, and still answered in full.
    alone = httpx.get(f"{server.base_url}/{search}", timeout=60)
    assert alone.status_code == 200
    assert len(alone.json()["entry"]) == 500 + 10
