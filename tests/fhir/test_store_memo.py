"""The store's per-transaction memo of what rules derive from definitions."""

from __future__ import annotations

from app.db import transaction
from app.runtime import Runtime


async def test_a_write_forgets_what_was_derived_from_its_type(runtime: Runtime) -> None:
    async with transaction(runtime.engine, write=True) as conn:
        store = runtime.store(conn)
        store.derived_from("PlanDefinition")["gates"] = ["stale"]
        store.derived_from("ValueSet")["members"] = ["kept"]
        server = store.as_server()
        assert server.derived_from("PlanDefinition") == {"gates": ["stale"]}  # shared
        plan = {"resourceType": "PlanDefinition", "status": "active", "title": "A gate"}
        await server.create(plan, resource_type="PlanDefinition")
        assert store.derived_from("PlanDefinition") == {}
        assert store.derived_from("ValueSet") == {"members": ["kept"]}
    async with transaction(runtime.engine, write=False) as conn:
        assert runtime.store(conn).derived_from("ValueSet") == {}  # one transaction only
