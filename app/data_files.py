"""Where the data folders Waymark reads at run time are: ``migrations/`` and ``seed/``.

In the source tree they sit at the top, beside ``app/`` (the layout developers and clinical leads
work in). A wheel carries them inside the package, as ``app/migrations`` and ``app/seed`` (the
build step in setup.py copies them there), so an installed Waymark finds its own files wherever
it runs. Never the working directory: a ``migrations/`` folder of another project must not be run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

_PACKAGE = Path(__file__).resolve().parent

DataFolder = Literal["migrations", "seed"]


def data_dir(name: DataFolder) -> Path:
    """The folder ``name``: inside the installed package, or at the top of a source tree."""
    installed = _PACKAGE / name
    if installed.is_dir():
        return installed
    source_tree = _PACKAGE.parent
    if (source_tree / "pyproject.toml").is_file() and (source_tree / name).is_dir():
        return source_tree / name
    raise FileNotFoundError(
        f"the {name}/ folder is neither in the installed package ({installed}) nor in a source "
        "tree: build the wheel with the project's setup.py, which ships it"
    )
