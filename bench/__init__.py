"""Waymark's benchmark harness: ``python -m bench.crud`` (or ``make bench``).

Nothing here is imported by the application; the two baseline routes live in
:mod:`bench.app`, outside the production app.
"""
