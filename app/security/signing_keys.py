"""Waymark's own signing keys: a private JWKS file, made on first use, rotated by command.

The first key in the file signs new access tokens; the one after it (the previous key, kept
by ``waymark keys rotate``) still verifies tokens it signed until they expire. Every server
process reads the file; a rotation is noticed without a restart, because the file is read
again when it changes (checked before signing, and when a token names an unknown key).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import uuid
from pathlib import Path
from typing import Any

from joserfc.jwk import ECKey, KeySet

log = logging.getLogger("waymark.security")

SIGNING_ALGORITHM = "ES384"
_CURVE = "P-384"
#: The current key and the previous one: access tokens live minutes, so one is enough.
KEYS_KEPT = 2


class SigningKeys:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._keys: list[ECKey] = []
        self._seen: tuple[int, int, int] | None = None  # inode, size, mtime of the file read

    def current(self) -> ECKey:
        """The key that signs new tokens."""
        self._refresh()
        return self._keys[0]

    def verification_key(self, kid: object) -> ECKey | None:
        """The key with ``kid``; the file is read again once if none has it."""
        if not self._keys:
            self._refresh()
        found = self._find(kid)
        if found is None and self._refresh():
            found = self._find(kid)
        return found

    def public_jwks(self) -> dict[str, Any]:
        self._refresh()
        return {"keys": [_public(key) for key in self._keys]}

    def rotate(self) -> ECKey:
        """Make a new current key, keeping the previous one for verification."""
        self._refresh()
        new = _new_key()
        _write(self.path, [new, *self._keys][:KEYS_KEPT], replace=True)
        self._refresh()
        return new

    def _find(self, kid: object) -> ECKey | None:
        return next((key for key in self._keys if key.kid == kid), None)

    def _refresh(self) -> bool:
        """Read the file if it changed since it was read (make it if missing); True if read."""
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            _write(self.path, [_new_key()], replace=False)
            log.warning("made a new token signing key in %s", self.path)
            stat = self.path.stat()
        seen = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
        if seen == self._seen:
            return False
        if stat.st_mode & 0o077:
            log.warning("the token signing key file %s is readable by others", self.path)
        keys = KeySet.import_key_set(json.loads(self.path.read_bytes())).keys
        if not keys or not all(isinstance(k, ECKey) and k.is_private for k in keys):
            raise ValueError(f"{self.path} must hold private {_CURVE} keys (a JWKS)")
        self._keys = [k for k in keys if isinstance(k, ECKey)]
        self._seen = seen
        return True


def _new_key() -> ECKey:
    return ECKey.generate_key(
        _CURVE, parameters={"alg": SIGNING_ALGORITHM, "use": "sig"}, auto_kid=True
    )


def _public(key: ECKey) -> dict[str, Any]:
    return dict(key.as_dict(private=False))


def _write(path: Path, keys: list[ECKey], *, replace: bool) -> None:
    """Write the key file whole, readable by its owner only, in one atomic step.

    A new file is linked into place only if none exists, so that two processes starting
    together agree on one key; a rotation replaces the file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    document = json.dumps({"keys": [key.as_dict(private=True) for key in keys]}, indent=2)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w") as file:
            file.write(document + "\n")
            file.flush()
            os.fsync(file.fileno())
        if replace:
            os.replace(temporary, path)
        else:
            # If another process made it first, its key stands.
            with contextlib.suppress(FileExistsError):
                os.link(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
