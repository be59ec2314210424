"""Loading the seed files: Waymark's terminology and pathway definitions (always needed), and
the demo directory (``waymark seed-demo``).

Loading is idempotent: a definition is written only when missing or changed, and the demo
directory's entries are conditional creates on their identifiers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncConnection

from app.data_files import data_dir
from app.fhir import transactions
from app.fhir.bundle_entries import parse_bundle
from app.fhir.store import FhirStore

DEFINITIONS = ("terminology", "pathway")


def seed_dir() -> Path:
    """The ``seed/`` folder: in the installed package, or at the top of a source tree."""
    return data_dir("seed")


async def load_definitions(store: FhirStore, folders: tuple[str, ...] = DEFINITIONS) -> list[str]:
    """Write each definition that is missing or differs; the ``Type/id`` of those written."""
    written = []
    for folder in folders:
        for path in sorted((seed_dir() / folder).glob("*.json")):
            document: dict[str, Any] = orjson.loads(path.read_bytes())
            resource_type, resource_id = document["resourceType"], document["id"]
            current = await store.current(resource_type, resource_id)
            if current is not None and _without_meta(current) == _without_meta(document):
                continue
            await store.update(resource_type, resource_id, document)
            written.append(f"{resource_type}/{resource_id}")
    return written


async def load_demo(
    store: FhirStore, conn: AsyncConnection, *, base_url: str, max_entries: int
) -> list[str]:
    """The definitions, the demo directory (two areas, services of every kind), then the
    gates the demo areas apply."""
    written = await load_definitions(store)
    for path in sorted((seed_dir() / "demo").glob("*.json")):
        bundle = parse_bundle(
            orjson.loads(path.read_bytes()), max_entries=max_entries, base_url=base_url
        )
        await transactions.process(bundle, store=store, conn=conn, base_url=base_url)
        written.append(f"{path.name} (conditional creates: what exists is kept)")
    return written + await load_definitions(store, ("demo/gates",))


def _without_meta(document: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in document.items() if k != "meta"}
