"""Structured logs: one JSON object per line, on stderr.

What may be logged is decided where a line is written: request lines carry the route
template, never the path or query string (which can hold NHS or CHI numbers), and errors carry
exception types, never messages (which can quote a resource).
"""

from __future__ import annotations

import logging
import logging.config
from typing import Any

from pythonjsonlogger.core import RESERVED_ATTRS

#: uvicorn adds an ANSI-coloured copy of its messages; one copy is enough.
_NOT_LOGGED = [*RESERVED_ATTRS, "color_message"]


def logging_config(level: str) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for Waymark and uvicorn, JSON throughout."""
    formatter = {
        "()": "pythonjsonlogger.json.JsonFormatter",
        "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s",
        "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
        "datefmt": "%Y-%m-%dT%H:%M:%S%z",
        "reserved_attrs": _NOT_LOGGED,
    }
    handler = {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": formatter},
        "handlers": {"stderr": handler},
        "loggers": {
            "waymark": {"handlers": ["stderr"], "level": level.upper(), "propagate": False},
            "uvicorn": {"handlers": ["stderr"], "level": level.upper(), "propagate": False},
            # uvicorn's access log prints paths with query strings: never enabled.
            "uvicorn.access": {"handlers": [], "level": "CRITICAL", "propagate": False},
        },
        # Libraries (SQLAlchemy, asyncpg, httpx) log warnings through the root: JSON too.
        "root": {"handlers": ["stderr"], "level": "WARNING"},
    }


def configure(level: str) -> None:
    logging.config.dictConfig(logging_config(level))
