"""Durable key store (SQLite): final keys by ID, written only after both users verified them."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import numpy as np


class KeyStore:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
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
