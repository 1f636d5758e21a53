"""Compile every numba kernel of a user's post-processing once, on a small synthetic key.

A first run after installation spends most of its time in numba's compiler. Alice and Bob run the
same kernels, and numba's on-disk cache lets one process reuse what another compiled: so as the
run starts, Bob compiles the reconciliation kernels (:func:`warm_up_reconciliation`) and Alice the
verification and amplification kernels (:func:`warm_up_hashing`), each in the background while the
relay compiles and samples the first round, and each finds the other's in the cache when the first
announcement arrives. Types, not sizes, select numba's compiled versions, so a small key
compiles exactly what a real round runs. Results are thrown away; nothing here is secret.
"""

from __future__ import annotations

import numpy as np

from classical.amplification import seed_from_bytes, toeplitz_hash
from classical.messages import ReconcileReply, ReconcileRequest
from classical.pipeline import shared_link_keys
from classical.reconciliation import AliceSession, Reconciler, Request
from classical.secure import wegman_carter_link
from classical.verification import draw_hash_key, tag_bits_for, verification_tag

#: Big enough, at this QBER, for every code path of reconciliation (Cascade's half-key passes
#: included) and of amplification (tiled products); tests/classical/test_warmup.py checks it.
WARM_UP_KEY_BITS = 200_000
WARM_UP_QBER = 0.03
#: Wegman–Carter key per direction: ample for the dialogue's few hundred tags.
_POOL_BYTES = 1 << 16


class _Wire:
    """A reconcile channel into Alice's session through authenticated frames, as in a round
    (``classical.secure``: codec, Wegman–Carter tags): arrays arrive as a real round's do
    (read-only buffers), so numba compiles the same versions of the kernels."""

    def __init__(self, session: AliceSession, rng: np.random.Generator) -> None:
        alice_keys, bob_keys = shared_link_keys(_POOL_BYTES, rng)
        self.alice = wegman_carter_link(alice_keys)
        self.bob = wegman_carter_link(bob_keys)
        self.session = session

    def ask(self, request: Request) -> np.ndarray:
        sent, _ = self.alice.unpack(self.bob.pack(ReconcileRequest(0, request.rows,
                                                                   request.bits)))
        seen = Request(sent.rows, sent.bits, request.reply_bits)
        reply = ReconcileReply(0, self.session.answer(seen))
        answer, _ = self.bob.unpack(self.alice.pack(reply))
        return answer.bits


def warm_up_reconciliation(reconciler: Reconciler, key_bits: int = WARM_UP_KEY_BITS,
                           qber: float = WARM_UP_QBER, seed: int = 0) -> None:
    """Reconcile a random key pair once, both sides through authenticated frames (Bob's part)."""
    rng = np.random.default_rng(seed)
    alice = rng.integers(0, 2, key_bits, dtype=np.uint8)
    bob = alice ^ (rng.random(key_bits) < qber).astype(np.uint8)
    plan = reconciler.plan(key_bits, qber, rng)
    reconciler.bob(bob, plan, _Wire(reconciler.alice(alice, plan), rng))


def warm_up_hashing(key_bits: int = WARM_UP_KEY_BITS, seed: int = 0) -> None:
    """Verify and amplify a random key once (Alice's part)."""
    rng = np.random.default_rng(seed)
    key = rng.integers(0, 2, key_bits, dtype=np.uint8)
    tag_bits = tag_bits_for(key_bits, 1e-15)
    verification_tag(key, draw_hash_key(rng, tag_bits), tag_bits)
    out_bits = key_bits // 2
    toeplitz_hash(key, seed_from_bytes(b"warm-up", key_bits, out_bits), out_bits)


def warm_up_postprocessing(reconciler: Reconciler, key_bits: int = WARM_UP_KEY_BITS,
                           qber: float = WARM_UP_QBER, seed: int = 0) -> None:
    """Both parts: every post-processing kernel of a round (the kernels, not the result)."""
    warm_up_reconciliation(reconciler, key_bits, qber, seed)
    warm_up_hashing(key_bits, seed)
