"""API keys: made once, shown once, stored only as hashes. Standard library only, so
`tars api-key` and `tars doctor` use it without loading the web stack.

A key is ``tars-`` plus 32 random bytes (URL-safe base64), so a plain SHA-256 of it
is as strong as a slow hash would be: nothing to guess. The file is JSON, written
atomically with mode 0600; the server re-reads it when it changes, so a revoked key
stops working at once, without a restart.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import re
import secrets
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tars_core.config import Config

KEYS_FILENAME = "api_keys.json"
KEY_PREFIX = "tars-"
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
FILE_VERSION = 1


class KeyFileError(ValueError):
    """A key operation that cannot be done; the message is for the user."""


@dataclass(frozen=True)
class ApiKey:
    name: str
    hash: str  # "sha256:<hex>" of the whole key
    hint: str  # the key's first characters, to tell keys apart in `list`
    created_at: float


def keys_path(config: Config) -> Path:
    if config.api.keys_file:
        return Path(config.api.keys_file).expanduser()
    return config.data_dir / KEYS_FILENAME


def hash_key(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode("utf-8")).hexdigest()


class KeyStore:
    """The keys file. ``verify`` is cheap enough for every request (a stat, then a
    dictionary lookup); the file is re-read only when its mtime or size changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._keys: dict[str, ApiKey] = {}  # hash -> key

    # -- reading -----------------------------------------------------------------------

    def _stat(self) -> tuple[int, int] | None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return (st.st_mtime_ns, st.st_size)

    def _load(self) -> dict[str, ApiKey]:
        stamp = self._stat()
        with self._lock:
            if stamp != self._stamp or stamp is None:
                self._keys = {k.hash: k for k in self._read()} if stamp is not None else {}
                self._stamp = stamp
            return self._keys

    def _read(self) -> list[ApiKey]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            raise KeyFileError(f"cannot read the API keys file {self.path}: {exc}") from None
        raw = data.get("keys") if isinstance(data, dict) else None
        if not isinstance(raw, list):
            raise KeyFileError(f"{self.path}: not an API keys file (no 'keys' list)")
        out = []
        for entry in raw:
            try:
                out.append(
                    ApiKey(
                        name=str(entry["name"]),
                        hash=str(entry["hash"]),
                        hint=str(entry.get("hint", "")),
                        created_at=float(entry.get("created_at", 0.0)),
                    )
                )
            except (KeyError, TypeError, ValueError):
                raise KeyFileError(f"{self.path}: a key entry is malformed: {entry!r}") from None
        return out

    def entries(self) -> list[ApiKey]:
        return sorted(self._load().values(), key=lambda k: (k.created_at, k.name))

    def count(self) -> int:
        return len(self._load())

    def verify(self, key: str) -> ApiKey | None:
        """The key's entry, or None. Compares hashes in constant time."""
        wanted = hash_key(key)
        found: ApiKey | None = None
        for known, entry in self._load().items():
            if hmac.compare_digest(known, wanted):
                found = entry
        return found

    def verify_name(self, name: str) -> ApiKey | None:
        """The key called ``name`` if it still exists (a long-lived socket's key)."""
        return next((k for k in self._load().values() if k.name == name), None)

    # -- writing -------------------------------------------------------------------------

    def new(self, name: str) -> str:
        """Create a key named ``name``; returns the key itself (never stored)."""
        if not NAME.fullmatch(name):
            raise KeyFileError(
                f"invalid key name {name!r}: use letters, digits, '.', '_' or '-' (at most 64)"
            )
        keys = self._read()
        if any(k.name == name for k in keys):
            raise KeyFileError(f"a key named {name!r} exists; revoke it first or pick another name")
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        keys.append(ApiKey(name, hash_key(key), key[: len(KEY_PREFIX) + 4], time.time()))
        self._write(keys)
        return key

    def revoke(self, name: str) -> ApiKey:
        keys = self._read()
        gone = [k for k in keys if k.name == name]
        if not gone:
            known = ", ".join(k.name for k in keys) or "none"
            raise KeyFileError(f"no key named {name!r} (keys: {known})")
        self._write([k for k in keys if k.name != name])
        return gone[0]

    def _write(self, keys: list[ApiKey]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data: dict[str, Any] = {"version": FILE_VERSION, "keys": [asdict(k) for k in keys]}
        fd, tmp = tempfile.mkstemp(prefix=".api_keys.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                os.fchmod(fh.fileno(), 0o600)
                json.dump(data, fh, indent=2)
                fh.write("\n")
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        with self._lock:
            self._stamp = None  # re-read on next use


__all__ = ["KEY_PREFIX", "ApiKey", "KeyFileError", "KeyStore", "hash_key", "keys_path"]
