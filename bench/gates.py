"""What gate evaluation adds to a referral (issue 6): ``python -m bench.gates``.

On a fresh PostgreSQL database (migrated, ``waymark seed-demo``), one server (uvicorn,
``--workers 2``, ``WAYMARK_AUTH=off`` on loopback) and ``wrk`` at ``--connections 32``,
interleaving two scenarios of the same referral, drug and alcohol team (solway-dat, through a
PractitionerRole) to psychology (code 309625004), each request for a person not yet referred
there:

* ``ungated``  to "Solway Psychology (no gate)", a second psychology service of the same kind
               and area, made here, that no gate guards (the baseline)
* ``gated``    to Solway Psychological Therapies (solway-psy), which the seed abstinence gate
               guards, enforced: three months without alcohol and illicit drugs

The people are bulk-loaded (:mod:`bench.bulk`) with last-use Observations of alcohol and
illicit drugs in a mix (``--mix``, default met 0.4, not-met 0.45, unknown 0.15): met ones go
ahead, the others are held (Task on-hold, DetectedIssue, gate decision). Each repetition's
ungated run refers the same people as its gated run (to a different service, so none is
refused), so both see the same evidence. Target: gated at least 0.80 of ungated.
``python -m bench.gates_reevaluate`` measures ``waymark gates reevaluate``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from typing import Any

import asyncpg
import orjson

from bench import bulk, crud, loadrun
from bench.crud import Scenario
from bench.loadrun import Files, Plan
from bench.referrals import Rates

TARGET = 0.80
PSYCHOLOGY = ("309625004", "Referral to psychology service")
FILES = ("path", "ids", "template", "token")
SCENARIOS = (
    Scenario("ungated", "referral, no gate", "create_each.lua", FILES),
    Scenario("gated", "referral, seed gate", "create_each.lua", FILES, "ungated", TARGET),
)
SERVICE_KIND = "https://fhir.waymark.org.uk/CodeSystem/service-kind"
ODS = "https://fhir.nhs.uk/Id/ods-organization-code"


def parse_mix(text: str) -> dict[str, float]:
    mix = {}
    for part in text.split(","):
        kind, _, share = part.partition("=")
        if kind not in bulk.EVIDENCE_KINDS:
            raise argparse.ArgumentTypeError(f"{kind!r} is not one of {bulk.EVIDENCE_KINDS}")
        mix[kind] = float(share)
    return mix


def ungated_psychology(http: Any, like: dict[str, Any]) -> str:
    """A psychology service in the same area as ``like`` that no gate guards; its id."""
    board = like["providedBy"]["reference"]
    with_board = http.get(f"/{board}").json().get("partOf", {}).get("reference")
    organization = loadrun.created(
        http,
        {
            "resourceType": "Organization",
            "identifier": [{"system": ODS, "value": "WMKS90"}],
            "active": True,
            "name": "Solway Psychology Clinic (benchmark, no gate)",
            **({"partOf": {"reference": with_board}} if with_board else {}),
        },
    )
    service = loadrun.created(
        http,
        {
            "resourceType": "HealthcareService",
            "identifier": [{"system": loadrun.SERVICE_SYSTEM, "value": "solway-psy-open"}],
            "active": True,
            "providedBy": {"reference": f"Organization/{organization['id']}"},
            "type": like["type"],
            "name": "Solway Psychology (no gate)",
        },
    )
    return str(service["id"])


def gates_on(http: Any, service_id: str) -> list[str]:
    """The codes of the gates acting on a service, as ``$gates`` lists them."""
    response = http.get(f"/HealthcareService/{service_id}/$gates")
    if response.status_code != 200:
        raise crud.BenchError(f"$gates: {response.status_code} {response.text[:300]}")
    text = response.text
    return sorted(
        code
        for code in (
            "gate-abstinence-psychology-solway",
            "gate-phase-1-before-trauma-focussed-work",
        )
        if code in text
    )


async def outcomes(dsn: str, service_id: str) -> dict[str, int]:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        rows = await conn.fetch(
            "SELECT d.outcome, d.held, count(*) FROM gate_decision d JOIN referral r "
            "USING (service_request_id) WHERE r.to_service_id = $1 GROUP BY 1, 2 ORDER BY 1, 2",
            service_id,
        )
        return {f"{r[0]}{' (held)' if r[1] else ''}": r[2] for r in rows}
    finally:
        await conn.close()


class Bench:
    def __init__(self, options: argparse.Namespace, server: crud.Server, url: str) -> None:
        self.options = options
        self.server = server
        self.dsn = loadrun.dsn(url)
        self.rates = Rates(options.max_rate)
        with loadrun.client(server.base_url) as http:
            dat = loadrun.service(http, "solway-dat")
            gated = loadrun.service(http, "solway-psy")
            self.services = {"gated": str(gated["id"]), "ungated": ungated_psychology(http, gated)}
            self.gates = {name: gates_on(http, sid) for name, sid in self.services.items()}
            role = loadrun.role_for(http, dat["id"])
        self.people = bulk.People(
            self.dsn, gp_org=None, nhs_base=640_000_000, mix=options.mix, seed=options.seed
        )
        self.templates = {}
        for name, service_id in self.services.items():
            path = loadrun.WORK_DIR / f"referral-{name}.json.tmpl"
            document = loadrun.referral(requester_role=role, performer=service_id, code=PSYCHOLOGY)
            path.write_bytes(orjson.dumps(document))
            self.templates[name] = path
        self.referred: list[str] = []  # the people of the last gated run

    def prepare(self, name: str, seconds: int) -> Files:
        need = self.rates.need(name, seconds)
        if name == "gated":
            self.referred = self.people.take(need)
            people = self.referred
        else:  # the gated run's people (when it ran first), referred to the other service
            people = self.referred + self.people.take(max(0, need - len(self.referred)))
            self.referred = []
        prefix = str(loadrun.WORK_DIR / f"{name}-ids")
        bulk.write_lists(people, prefix, self.options.threads)
        return Files(
            {
                "path": "/ServiceRequest",
                "ids": prefix,
                "template": str(self.templates[name]),
                "token": "-",
            }
        )

    def plans(self) -> list[Plan]:
        # The gated run first in each repetition, so that the ungated one refers its people.
        ordered = sorted(SCENARIOS, key=lambda s: s.name != "gated")
        return [
            Plan(s, self.server, lambda n, name=s.name: self.prepare(name, n), self.rates.note)
            for s in ordered
        ]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.gates", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    loadrun.add_arguments(parser)
    parser.add_argument(
        "--mix",
        type=parse_mix,
        default="met=0.4,not-met=0.45,unknown=0.15",
        help="shares of people whose evidence meets the gate, does not, or is missing "
        "(default %(default)s)",
    )
    parser.add_argument(
        "--max-rate",
        type=float,
        default=1500.0,
        help="req/s to prepare people for before a rate is measured (default 1500)",
    )
    parser.add_argument("--seed", type=int, default=1, help="draws of the evidence")
    options = parser.parse_args(argv)
    if isinstance(options.mix, str):
        options.mix = parse_mix(options.mix)
    loadrun.check_arguments(parser, options)
    return options


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    wrk = loadrun.find_wrk()
    loadrun.WORK_DIR.mkdir(parents=True, exist_ok=True)
    print(
        f"Gate benchmark (issue 6): PostgreSQL, {options.workers} workers, "
        f"{options.connections} connections, {options.duration} s x {options.repeat} runs; "
        f"evidence mix {options.mix}"
    )
    with crud.postgres_database(options.postgres_url) as url:
        print("   migrating, waymark seed-demo", flush=True)
        loadrun.prepare_database(url)
        cores = loadrun.background("the server")
        with crud.serve(url, options.workers, loadrun.WORK_DIR / "server-gates.log") as server:
            bench = Bench(options, server, url)
            print(f"   gates acting ($gates): {bench.gates}", flush=True)
            if "gate-abstinence-psychology-solway" not in bench.gates["gated"] or any(
                "abstinence" in code for code in bench.gates["ungated"]
            ):
                raise crud.BenchError(
                    f"the routes are not as this benchmark expects: {bench.gates}"
                )
            runs = loadrun.drive(wrk, bench.plans(), options, "gates")
            decided = {
                name: asyncio.run(outcomes(bench.dsn, service_id))
                for name, service_id in bench.services.items()
            }
    summaries = loadrun.report(
        f"PostgreSQL, {options.workers} uvicorn workers, {options.connections} connections, "
        f"{options.duration} s runs",
        runs,
        SCENARIOS,
        options,
    )
    print(f"gate decisions recorded, by route: {decided}")
    print(
        f"people bulk-loaded with evidence: {bench.people.made:,} in "
        f"{bench.people.load_seconds:.1f} s"
    )
    extra = {
        "background_cores": cores,
        "gates_acting": bench.gates,
        "gate_decisions": decided,
        "people_loaded": bench.people.made,
    }
    loadrun.write_results("gates", options, {"runs": runs, "summaries": summaries, "extra": extra})
    return loadrun.exit_status(runs, summaries, options.check_targets)


if __name__ == "__main__":
    sys.exit(main())
