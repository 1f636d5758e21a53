"""Durable key store (SQLite): final keys by ID, written only after both users verified them.

The database file is created owner-only (mode 0600) before SQLite opens it, so there is no moment
at which it can be read by others whatever the umask; SQLite gives its -wal and -shm files the
database file's permissions.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import numpy as np

#: Permissions of a new key store: read and write for its owner, nothing for anyone else.
STORE_FILE_MODE = 0o600


def _create_owner_only(path: Path) -> None:
    """Create ``path`` with mode 0600 if it does not exist (atomically: O_CREAT | O_EXCL)."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | getattr(os, "O_NOFOLLOW", 0),
                     STORE_FILE_MODE)
    except FileExistsError:
        return
    os.close(fd)


class KeyStore:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _create_owner_only(self.path)
        self._db = sqlite3.connect(self.path)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS keys (key_id TEXT PRIMARY KEY, "
                         "round_id INTEGER NOT NULL, bits INTEGER NOT NULL, "
                         "packed BLOB NOT NULL, "
                         "stored_at REAL NOT NULL DEFAULT (julianday('now')))")
        self._db.commit()

    def put(self, key_id: str, round_id: int, bits: np.ndarray) -> None:
        bits = np.asarray(bits, dtype=np.uint8)
        with self._db:
            self._db.execute("INSERT INTO keys (key_id, round_id, bits, packed) VALUES (?,?,?,?)",
                             (key_id, int(round_id), int(bits.size), np.packbits(bits).tobytes()))

    def get(self, key_id: str) -> np.ndarray:
        row = self._db.execute("SELECT bits, packed FROM keys WHERE key_id = ?",
                               (key_id,)).fetchone()
        if row is None:
            raise KeyError(key_id)
        return np.unpackbits(np.frombuffer(row[1], np.uint8))[: row[0]]

    def items(self) -> Iterator[tuple[str, int, np.ndarray]]:
        for key_id, round_id, n, packed in self._db.execute(
                "SELECT key_id, round_id, bits, packed FROM keys ORDER BY round_id, key_id"):
            yield key_id, round_id, np.unpackbits(np.frombuffer(packed, np.uint8))[:n]

    def total_bits(self) -> int:
        return int(self._db.execute("SELECT COALESCE(SUM(bits), 0) FROM keys").fetchone()[0])

    def close(self) -> None:
        self._db.close()
