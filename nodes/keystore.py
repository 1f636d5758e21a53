"""Durable key store (SQLite): final keys by ID, written only after both users verified them.

On a link that restarts (``runtime.restart``) it is also the user's durable ledger of the
two-phase commit (``classical.custody.Ledger``), so that a restarted node resumes exactly where
its key custody stood: ``commits`` lists every key
committed, in order, with the authentication key its head paid back into each pool (the bytes
appended to the pools, which a restarted node replays), and ``pending`` holds the key Bob has
confirmed but not yet settled. A commit writes the key, its refills and the end of its pending
state in one transaction, so a node killed at any instant leaves the store and the ledger in
step.

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
        # a deleted row (a pending key discarded) is overwritten, not left in free pages
        self._db.execute("PRAGMA secure_delete=ON")
        self._db.execute("CREATE TABLE IF NOT EXISTS keys (key_id TEXT PRIMARY KEY, "
                         "round_id INTEGER NOT NULL, bits INTEGER NOT NULL, "
                         "packed BLOB NOT NULL, "
                         "stored_at REAL NOT NULL DEFAULT (julianday('now')))")
        self._db.execute("CREATE TABLE IF NOT EXISTS commits (n INTEGER PRIMARY KEY, "
                         "key_id TEXT NOT NULL, round_id INTEGER NOT NULL, "
                         "a_to_b BLOB NOT NULL, b_to_a BLOB NOT NULL)")
        self._db.execute("CREATE TABLE IF NOT EXISTS pending (key_id TEXT PRIMARY KEY, "
                         "round_id INTEGER NOT NULL, bits INTEGER NOT NULL, "
                         "packed BLOB NOT NULL, repayment TEXT NOT NULL)")
        self._db.commit()

    # --- the ledger of the two-phase commit (classical.custody.Ledger) -------------------------

    def hold(self, key_id: str, round_id: int, bits: np.ndarray, repayment: str) -> None:
        """A key held pending (Bob, before he confirms it): kept until it is settled."""
        bits = np.asarray(bits, dtype=np.uint8)
        with self._db:
            self._db.execute("DELETE FROM pending")
            self._db.execute("INSERT INTO pending VALUES (?,?,?,?,?)",
                             (key_id, int(round_id), int(bits.size),
                              np.packbits(bits).tobytes(), repayment))

    def commit(self, key_id: str, round_id: int, bits: np.ndarray,
               refills: tuple[bytes, bytes]) -> None:
        """One committed key, in one transaction: its net bits (if any) stored, the bytes its
        head paid into the A→B and B→A pools recorded, its pending state ended."""
        bits = np.asarray(bits, dtype=np.uint8)
        with self._db:
            if bits.size:
                self._db.execute("INSERT INTO keys (key_id, round_id, bits, packed) "
                                 "VALUES (?,?,?,?)", (key_id, int(round_id), int(bits.size),
                                                      np.packbits(bits).tobytes()))
            self._db.execute("INSERT INTO commits (key_id, round_id, a_to_b, b_to_a) "
                             "VALUES (?,?,?,?)", (key_id, int(round_id), bytes(refills[0]),
                                                  bytes(refills[1])))
            self._db.execute("DELETE FROM pending")

    def discard(self, key_id: str) -> None:
        """A pending key discarded: nothing of it stays."""
        with self._db:
            self._db.execute("DELETE FROM pending WHERE key_id = ?", (key_id,))

    def pending(self) -> tuple[str, int, np.ndarray, str] | None:
        """The key held pending (key ID, round, bits, repayment as written), or None."""
        row = self._db.execute("SELECT key_id, round_id, bits, packed, repayment "
                               "FROM pending").fetchone()
        if row is None:
            return None
        return row[0], row[1], np.unpackbits(np.frombuffer(row[3], np.uint8))[: row[2]], row[4]

    def commits(self) -> list[tuple[str, int, bytes, bytes]]:
        """Every key committed, in order: (key ID, round, A→B refill, B→A refill)."""
        return [(k, r, bytes(ab), bytes(ba)) for k, r, ab, ba in self._db.execute(
            "SELECT key_id, round_id, a_to_b, b_to_a FROM commits ORDER BY n")]

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
