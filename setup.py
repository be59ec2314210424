"""One build step that pyproject.toml cannot declare: the wheel carries the top-level
``migrations/`` and ``seed/`` folders inside the package, as ``app/migrations`` and ``app/seed``.

``waymark migrate`` and ``waymark seed`` must work from an installed wheel (the container image),
while the source layout keeps those folders at the top, where Alembic and the clinical leads
expect them. Copying them in at build time keeps one copy in git and ships it; app/data_files.py
finds them in either place. An editable install reads them from the source tree, so it copies
nothing. Everything else about the build is declared in pyproject.toml.
"""

from __future__ import annotations

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

SHIPPED_FOLDERS = ("migrations", "seed")


class BuildPyWithDataFolders(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        for folder in SHIPPED_FOLDERS:
            for source in sorted(Path(folder).rglob("*")):
                if source.is_file() and "__pycache__" not in source.parts:
                    target = Path(self.build_lib, "app", source)
                    self.mkpath(str(target.parent))
                    self.copy_file(str(source), str(target))


setup(cmdclass={"build_py": BuildPyWithDataFolders})
