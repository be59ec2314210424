"""The pathway's domain rules: directory, referrals, gates, phases and their projections.

They join FHIR writes as write hooks (:func:`hooks`); app/fhir knows nothing about them.
"""

from __future__ import annotations

from app.fhir.hooks import WriteHooks


def hooks() -> WriteHooks:
    """The write hooks of every pathway rule."""
    from app.pathway import phase_rules, referrals, shared_care

    installed = WriteHooks()
    referrals.install(installed)
    phase_rules.install(installed)
    shared_care.install(installed)
    return installed
