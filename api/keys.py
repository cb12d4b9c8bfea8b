"""API keys with roles, stored as SHA-256 hashes in the data directory (never in clear).

Keys are 256-bit random tokens, so a fast hash is enough: there is nothing to brute-force.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import threading
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from enum import IntEnum
from pathlib import Path

from search.snapshots import atomic_write_text

KEYS_FILE = "api_keys.json"


class Role(IntEnum):
    reader = 1  # search, get documents
    writer = 2  # + document writes
    admin = 3  # + admin endpoints, metrics


@dataclass(frozen=True)
class ApiKey:
    name: str
    role: str
    hash: str
    created_at: str


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class KeyStore:
    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / KEYS_FILE
        self._lock = threading.Lock()
        self._by_hash: dict[str, ApiKey] = {}
        self._mtime: float | None = None

    def _load(self) -> dict[str, ApiKey]:
        # Re-read when the file changed, so `dss keys revoke` takes effect on a running server.
        try:
            mtime: float | None = os.stat(self.path).st_mtime  # one system call: this runs per request
        except FileNotFoundError:
            mtime = None
        if mtime != self._mtime:
            keys = json.loads(self.path.read_text())["keys"] if mtime else []
            self._by_hash = {k["hash"]: ApiKey(**k) for k in keys}
            self._mtime = mtime
        return self._by_hash

    def _save(self, keys: dict[str, ApiKey]) -> None:
        atomic_write_text(self.path, json.dumps({"keys": [asdict(k) for k in keys.values()]}, indent=1))
        self._mtime = None

    def create(self, role: Role, name: str | None = None) -> tuple[str, ApiKey]:
        """A new key (returned once, in clear) and its stored record."""
        with self._lock:
            keys = dict(self._load())
            name = name or f"{role.name}-{secrets.token_hex(3)}"
            if any(k.name == name for k in keys.values()):
                raise ValueError(f"a key named {name!r} already exists")
            secret = "dss_" + secrets.token_urlsafe(32)
            record = ApiKey(name, role.name, _digest(secret), datetime.now(UTC).isoformat())
            keys[record.hash] = record
            self._save(keys)
            return secret, record

    def list(self) -> list[ApiKey]:
        with self._lock:
            return sorted(self._load().values(), key=lambda k: k.created_at)

    def revoke(self, name: str) -> bool:
        with self._lock:
            keys = dict(self._load())
            remaining = {h: k for h, k in keys.items() if k.name != name}
            if len(remaining) == len(keys):
                return False
            self._save(remaining)
            return True

    def role_of(self, key: str) -> Role | None:
        with self._lock:
            record = self._load().get(_digest(key))
        return Role[record.role] if record else None


def refusal(keys: KeyStore, key: str | None, needed: Role) -> tuple[int, str] | None:
    """Why ``key`` may not do what needs the ``needed`` role: (HTTP status, message), or None."""
    if not key:
        return 401, "missing API key: send it in the X-API-Key header"
    granted = keys.role_of(key)
    if granted is None:
        return 401, "unknown or revoked API key"
    if granted < needed:
        return 403, f"this endpoint needs the {needed.name} role; the key has {granted.name}"
    return None
