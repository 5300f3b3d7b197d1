"""The agent's memory of who pulled which image, in a small file under --state-dir.

``<state-dir>/pulls.json`` holds, per repository and image ID, the keys of the
credentials that pulled (or were verified for) it: ``anonymous``, or an
HMAC-SHA256 of registry, username and password under a random per-node key
kept in the same file (mode 0600). The secret itself is never stored, and the
keyed hash cannot be checked against guessed passwords without the node's key.
Docker cannot hold this: image labels are fixed by the image, and the
daemon has no per-image annotations. The file survives agent restarts (mount
the state dir from the host, as the chart does); when it cannot be written the
agent keeps the records in memory only, which is safe: forgotten grants are
asked of the registry again.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
import threading
from pathlib import Path
from typing import Any

from imageops.services.backend import RegistryAuth
from imageops.services.pull_grants import ANONYMOUS

log = logging.getLogger(__name__)
FILE_NAME = "pulls.json"
# Bounds: a node sees many images, but a record is ~100 bytes.
MAX_KEYS_PER_IMAGE = 32
MAX_IMAGES = 20_000


class FilePullRecords:
    """PullRecords in a JSON file, written atomically on every change."""

    def __init__(self, state_dir: str | Path | None) -> None:
        self._lock = threading.Lock()
        self._path = Path(state_dir) / FILE_NAME if state_dir else None
        self._records: dict[str, list[str]] = {}  # "name\0image_id" -> keys, oldest first
        self._salt = secrets.token_bytes(32)
        self._writable = self._path is not None
        self._load()

    def _load(self) -> None:
        if self._path is None or not self._path.exists():
            return
        try:
            data: dict[str, Any] = json.loads(self._path.read_text())
            self._salt = bytes.fromhex(str(data["key"]))
            self._records = {str(k): [str(x) for x in v] for k, v in data["records"].items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning(
                "ignoring unreadable %s (%s): cache hits are verified again", self._path, exc
            )
            self._records = {}

    def key(self, auth: RegistryAuth | None) -> str:
        """ANONYMOUS, or the keyed hash of the credentials."""
        if auth is None:
            return ANONYMOUS
        text = f"{auth.registry}\0{auth.username}\0{auth.password}".encode()
        return "hmac-sha256:" + hmac.new(self._salt, text, hashlib.sha256).hexdigest()

    def holders(self, name: str, image_id: str) -> frozenset[str]:
        """Keys recorded for the image."""
        with self._lock:
            return frozenset(self._records.get(f"{name}\0{image_id}", ()))

    def add(self, name: str, image_id: str, key: str) -> None:
        """Record a grant (no-op when known); persisted before returning."""
        entry = f"{name}\0{image_id}"
        with self._lock:
            keys = self._records.setdefault(entry, [])
            if key in keys:
                return
            keys.append(key)
            del keys[:-MAX_KEYS_PER_IMAGE]
            while len(self._records) > MAX_IMAGES:
                self._records.pop(next(iter(self._records)))
            self._save()

    def _save(self) -> None:
        if self._path is None or not self._writable:
            return
        data = {"key": self._salt.hex(), "records": self._records}
        tmp = self._path.with_suffix(".tmp")
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as out:
                json.dump(data, out)
            os.replace(tmp, self._path)
        except OSError as exc:
            self._writable = False
            log.warning("cannot write %s (%s): pull records kept in memory only", self._path, exc)
