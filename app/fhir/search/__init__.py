"""FHIR search: the parameter registry, the index kept on every write, and queries over it."""
