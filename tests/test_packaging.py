"""The installed wheel runs on its own (issue 18, item 15): built from exactly what the
Dockerfile's build stage copies, installed non-editable into a new virtualenv, and driven from a
directory outside the repository, `waymark migrate`, `waymark seed-demo` and `waymark serve` work
and /metadata and /docs answer.

The new virtualenv takes Waymark itself from the wheel only; its dependencies come from the
project's own virtualenv through a .pth file (a plain path: that folder's own .pth files, among
them the editable install of this source tree, are not run), so nothing is downloaded. Runs
once: it makes its own SQLite database rather than using the per-database fixtures.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.docs_pages import DOCS_PAGES, expected_type, page_assets

REPOSITORY = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Installed:
    wheel: Path
    venv: Path
    workdir: Path  # outside the repository, with no migrations/ or seed/ in it

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    @property
    def waymark(self) -> Path:
        return self.venv / "bin" / "waymark"

    def environment(self, **settings: str) -> dict[str, str]:
        kept = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith("WAYMARK_") and name not in ("PYTHONPATH", "VIRTUAL_ENV")
        }
        database = self.workdir / "waymark.db"
        return {
            **kept,
            "WAYMARK_DATABASE_URL": f"sqlite+aiosqlite:///{database}",
            "WAYMARK_TOKEN_KEY_FILE": str(self.workdir / "token-signing-key.json"),
            **settings,
        }

    def run(self, *arguments: str) -> str:
        done = subprocess.run(
            arguments,
            cwd=self.workdir,
            env=self.environment(),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, f"{shlex.join(arguments)}:\n{done.stdout}\n{done.stderr}"
        return done.stdout


def _docker_build_context(destination: Path) -> None:
    """Copy what the Dockerfile's build stage copies, where it copies it."""
    stages = re.split(r"^FROM ", (REPOSITORY / "Dockerfile").read_text(), flags=re.MULTILINE)
    copies = [line.split()[1:] for line in stages[1].splitlines() if line.startswith("COPY ")]
    assert copies, "the Dockerfile's build stage copies nothing"
    for *sources, target in copies:
        place = destination / target
        for source in sources:
            origin = REPOSITORY / source
            if origin.is_dir():
                shutil.copytree(origin, place, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                assert target.endswith("/"), f"COPY {source} {target}: a file goes into a folder"
                place.mkdir(parents=True, exist_ok=True)
                shutil.copy2(origin, place / origin.name)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    root = tmp_path_factory.mktemp("wheel")
    context, dist, venv, workdir = (root / name for name in ("src", "dist", "venv", "work"))
    context.mkdir()
    workdir.mkdir()
    _docker_build_context(context)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet"]
    subprocess.run([*pip, "wheel", "--no-deps", "--wheel-dir", str(dist), str(context)], check=True)
    (wheel,) = dist.glob("waymark-*.whl")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    new_site = Path(
        subprocess.run(
            [
                str(venv / "bin" / "python"),
                "-c",
                "import sysconfig; print(sysconfig.get_path('purelib'))",
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    ours = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    (new_site / "waymark_test_dependencies.pth").write_text("\n".join(sorted(ours)) + "\n")
    subprocess.run(
        [*pip, "--python", str(venv / "bin" / "python"), "install", "--no-deps", str(wheel)],
        check=True,
    )
    return Installed(wheel=wheel, venv=venv, workdir=workdir)


def _shipped_in_source() -> set[str]:
    """Every file the running app may read: data files under app/, and migrations/ and seed/
    (which the wheel carries under app/)."""
    wanted = {
        str(path.relative_to(REPOSITORY))
        for path in (REPOSITORY / "app").rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    for folder in ("migrations", "seed"):
        wanted |= {
            f"app/{path.relative_to(REPOSITORY)}"
            for path in (REPOSITORY / folder).rglob("*")
            if path.is_file() and "__pycache__" not in path.parts
        }
    return wanted


def test_the_wheel_carries_every_file_the_app_reads(installed: Installed) -> None:
    with zipfile.ZipFile(installed.wheel) as wheel:
        in_wheel = set(wheel.namelist())
    missing = sorted(_shipped_in_source() - in_wheel)
    assert missing == [], f"not in the wheel (see [tool.setuptools.package-data]): {missing}"
    assert "app/fhir/search/parameters.json" in in_wheel


def test_app_is_imported_from_the_wheel_not_the_source_tree(installed: Installed) -> None:
    where = Path(installed.run(str(installed.python), "-c", "import app; print(app.__file__)"))
    assert where.is_relative_to(installed.venv), where
    assert not where.is_relative_to(REPOSITORY), where


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def _serving(installed: Installed) -> Iterator[str]:
    """`waymark serve` from the wheel on a free loopback port, until it answers /health."""
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    log = installed.workdir / "serve.log"
    with (
        log.open("w") as output,
        subprocess.Popen(
            [str(installed.waymark), "serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=installed.workdir,
            env=installed.environment(WAYMARK_BASE_URL=base),
            stdout=output,
            stderr=subprocess.STDOUT,
        ) as server,
    ):
        try:
            deadline = time.monotonic() + 60
            while not _answers_health(base):
                if server.poll() is not None:
                    pytest.fail(f"waymark serve exited ({server.returncode}):\n{log.read_text()}")
                assert time.monotonic() < deadline, f"no answer on /health:\n{log.read_text()}"
                time.sleep(0.2)
            yield base
        finally:
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()


def _answers_health(base: str) -> bool:
    try:
        return httpx.get(f"{base}/health", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def test_the_installed_wheel_migrates_seeds_and_serves(installed: Installed) -> None:
    assert not (installed.workdir / "migrations").exists()
    assert not (installed.workdir / "seed").exists()
    assert "migrated to head" in installed.run(str(installed.waymark), "migrate")
    assert "Demo data loaded" in installed.run(str(installed.waymark), "seed-demo")
    with _serving(installed) as base, httpx.Client(base_url=base, timeout=30) as http:
        metadata = http.get("/metadata")
        assert metadata.status_code == 200
        statement = metadata.json()
        assert statement["resourceType"] == "CapabilityStatement"
        assert {r["type"] for r in statement["rest"][0]["resource"]} >= {"Patient", "Task"}
        for page in DOCS_PAGES:
            response = http.get(page)
            assert response.status_code == 200, page
            for url in page_assets(response.text):
                asset = http.get(url)
                assert asset.status_code == 200, url
                assert expected_type(url) in asset.headers["content-type"], url
