"""The key store keeps keys from other local users: owner-only from the first byte."""

from __future__ import annotations

import os
import sqlite3
import stat

import numpy as np
import pytest

import nodes.keystore as keystore
from nodes.keystore import KeyStore


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def permissive_umask():
    """umask 0: a file created without an explicit mode would be world-readable (0644 or 0666)."""
    old = os.umask(0)
    yield
    os.umask(old)


def test_a_new_store_is_owner_only_before_sqlite_opens_it(tmp_path, monkeypatch,
                                                          permissive_umask):
    seen = []
    real_connect = sqlite3.connect

    def connect(path, *args, **kwargs):  # the mode at the moment SQLite first touches the file
        seen.append(_mode(path) if os.path.exists(path) else None)
        return real_connect(path, *args, **kwargs)

    monkeypatch.setattr(keystore.sqlite3, "connect", connect)
    path = tmp_path / "alice" / "keys.sqlite"
    store = KeyStore(path)
    store.put("k0", 0, np.ones(100, dtype=np.uint8))
    assert seen == [0o600]
    for f in path.parent.iterdir():  # keys.sqlite and, in WAL mode, its -wal and -shm files
        assert _mode(f) == 0o600, f.name
    store.close()


def test_reopening_a_store_keeps_its_keys_and_its_mode(tmp_path, permissive_umask):
    path = tmp_path / "keys.sqlite"
    first = KeyStore(path)
    first.put("k0", 0, np.array([1, 0, 1], dtype=np.uint8))
    first.close()
    again = KeyStore(path)
    assert again.get("k0").tolist() == [1, 0, 1]
    again.close()
    assert _mode(path) == 0o600
