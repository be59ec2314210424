"""Logs: one JSON object per line, every logger included, and never a patient's identifier."""

from __future__ import annotations

import io
import json
import logging
import logging.config
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from app.logs import logging_config
from tests.api.helpers import FHIR_JSON, NHS, patient

NHS_NUMBER = "9434765919"


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    """Waymark's JSON formatter, exactly as its logging configuration builds it, on every
    logger the configuration names (the root included), writing to a buffer. (dictConfig
    itself would close pytest's own capture handlers.)"""
    config = logging_config("info")
    formatter = logging.config.DictConfigurator(config).configure_formatter(
        config["formatters"]["json"]
    )
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(formatter)
    loggers = [logging.getLogger(name) for name in config["loggers"]] + [logging.getLogger()]
    saved = [(lg.level, lg.propagate) for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
    for name, settings in config["loggers"].items():
        logging.getLogger(name).propagate = settings["propagate"]
    logging.getLogger("waymark").setLevel(logging.INFO)
    try:
        yield buffer
    finally:
        for lg, (level, propagate) in zip(loggers, saved, strict=True):
            lg.removeHandler(handler)
            lg.setLevel(level)
            lg.propagate = propagate


def _lines(buffer: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines() if line.strip()]


async def test_request_lines_are_json_without_identifiers(
    client: httpx.AsyncClient, json_logs: io.StringIO
) -> None:
    headers = {**FHIR_JSON, "X-Request-ID": "log-test"}
    await client.post("/Patient", json=patient(NHS_NUMBER), headers=headers)
    await client.get(f"/Patient?identifier={NHS}|{NHS_NUMBER}", headers=headers)
    await client.get(f"/Patient/{NHS_NUMBER}", headers=headers)  # looks like one; 404
    bad = patient("9434765918")  # a wrong check digit: 400, the message names no number
    await client.post("/Patient", json=bad, headers=headers)
    logging.getLogger("sqlalchemy.test").warning("a library warning")

    lines = _lines(json_logs)  # every line parses as JSON
    requests = [line for line in lines if line.get("message") == "request"]
    assert [r["route"] for r in requests] == [
        "/{resource_type}",
        "/{resource_type}",
        "/{resource_type}/{resource_id}",
        "/{resource_type}",
    ]
    assert [r["status"] for r in requests] == [201, 200, 404, 400]
    assert {r["request_id"] for r in requests} == {"log-test"}
    assert all(r["client_id"] for r in requests)
    assert any(line.get("logger") == "sqlalchemy.test" for line in lines)
    text = json.dumps(lines)
    for start in range(len(NHS_NUMBER) - 3):  # not even four digits of it in a row
        assert NHS_NUMBER[start : start + 4] not in text


def test_serve_runs_uvicorn_without_its_access_log(monkeypatch: pytest.MonkeyPatch) -> None:
    """uvicorn's access log prints the path and query string: `waymark serve` turns it off
    and installs the JSON configuration."""
    import uvicorn

    from app.cli import cli

    seen: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: seen.update(kwargs))
    monkeypatch.setenv("WAYMARK_LOG_LEVEL", "warning")
    result = CliRunner().invoke(cli, ["serve", "--port", "8765"])
    assert result.exit_code == 0, result.output
    assert seen["access_log"] is False
    assert seen["log_config"] == logging_config("warning")
    assert seen["log_config"]["loggers"]["uvicorn.access"]["handlers"] == []
