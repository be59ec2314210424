"""The reference in docs/ stays true to the code: every setting is documented, and every
link between README.md and docs/ leads somewhere (a file, and a heading when one is named)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from app.config import Settings

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
LINK = re.compile(r"\]\((?!https?:|mailto:|<)([^)\s]+)\)")


def _anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(document: Path) -> set[str]:
    lines = document.read_text().splitlines()
    return {_anchor(line.lstrip("#")) for line in lines if line.startswith("#")}


def test_every_setting_is_in_the_configuration_reference() -> None:
    reference = (ROOT / "docs" / "configuration.md").read_text()
    missing = [
        f"WAYMARK_{name.upper()}"
        for name in Settings.model_fields
        if f"WAYMARK_{name.upper()}" not in reference
    ]
    assert missing == []


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_between_documents_resolves(document: Path) -> None:
    broken = [t for t in LINK.findall(document.read_text()) if not _leads_somewhere(document, t)]
    assert broken == []


def _leads_somewhere(document: Path, target: str) -> bool:
    path, _, anchor = target.partition("#")
    linked = (document.parent / path).resolve() if path else document
    if not linked.exists():
        return False
    return not anchor or linked.suffix != ".md" or anchor in _anchors(linked)


def test_every_test_the_hazard_log_names_exists() -> None:
    """A control is only as good as the test said to verify it: each one named must exist."""
    log = (ROOT / "docs" / "clinical-safety" / "hazard-log.md").read_text()
    missing = []
    for cell in re.findall(r"\|([^|]*::[^|]*)\|\s*$", log, flags=re.MULTILINE):
        module = None
        for reference in re.findall(r"`([^`]+)`", cell):
            file, _, name = reference.rpartition("::")
            module = file or module
            source = (ROOT / "tests" / "pathway" / str(module)).read_text()
            if f"def {name}(" not in source:
                missing.append(f"{module}::{name}")
    assert missing == []
