"""Waymark's canonical base: the stable URL its own identifiers, CodeSystems and ValueSets
hang from. It names things, it is not an address the service is served at."""

WAYMARK = "https://fhir.waymark.org.uk"
CLIENT_ID_SYSTEM = f"{WAYMARK}/Id/client"
