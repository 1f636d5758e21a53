"""Reading a run's key stores in tests."""

from __future__ import annotations

from pathlib import Path

from nodes.keystore import KeyStore


def store_keys(path: Path) -> dict[str, bytes]:
    """Key ID → the key's bits (as bytes) of the key store at ``path``."""
    store = KeyStore(path)
    try:
        return {k: bits.tobytes() for k, _, bits in store.items()}
    finally:
        store.close()
