"""One frame-opening path for every transport: forged frames are counted and dropped (a flood of
them ends the round), stale rounds are counted and dropped, a peer's abort ends the round unless
it is expected."""

from __future__ import annotations

import numpy as np
import pytest

from classical.messages import EndOfRun, RoundAbort, RoundStart
from classical.peer import HELD, MAX_REJECTED_PER_ROUND, FramePeer
from classical.pipeline import QueuePeer, shared_link_keys
from classical.rounds import PeerAborted, ProtocolError
from classical.secure import wegman_carter_link
from nodes.transport import ZmqPeer


class ListPeer(FramePeer):
    """A FramePeer over a list: the smallest transport there is."""

    def __init__(self, name, link, frames, counts):
        super().__init__(name, link, lambda c: counts.append(c))
        self.frames = frames

    def _put(self, frame):
        self.frames.append(frame)

    def _get(self):
        if not self.frames:
            raise ProtocolError("no frame")
        return self.frames.pop(0)


@pytest.fixture
def pair():
    a_keys, b_keys = shared_link_keys(1 << 12, np.random.default_rng(0))
    wire, counts = [], []
    alice = ListPeer("bob", wegman_carter_link(a_keys), wire, [])
    bob = ListPeer("alice", wegman_carter_link(b_keys), wire, counts)
    return alice, bob, wire, counts


def test_an_expected_message_arrives(pair):
    alice, bob, _, _ = pair
    alice.send(RoundStart(round_id=3, start_slot=0, stop_slot=1 << 20))
    assert bob.receive(RoundStart) == RoundStart(round_id=3, start_slot=0, stop_slot=1 << 20)


def _forge(frame: bytes) -> bytes:
    return frame[:-1] + bytes([frame[-1] ^ 1])


def test_a_forged_frame_is_counted_and_dropped_and_the_real_one_still_arrives(pair):
    alice, bob, wire, counts = pair
    alice.send(EndOfRun(round_id=0, reason="done", committed=""))
    wire.insert(0, _forge(wire[0]))  # a forgery of the same frame arrives first
    assert bob.receive(EndOfRun).reason == "done"
    assert counts == ["classical_frames_rejected_AuthenticationError"]


def test_a_flood_of_forged_frames_breaks_the_channel(pair):
    alice, bob, wire, counts = pair
    alice.send(EndOfRun(round_id=0, reason="done", committed=""))
    wire[:] = [_forge(wire[0])] * (MAX_REJECTED_PER_ROUND + 1)
    with pytest.raises(ProtocolError, match="channel from alice broken"):
        bob.receive(EndOfRun)
    assert counts == ["classical_frames_rejected_AuthenticationError"] * (
        MAX_REJECTED_PER_ROUND + 1)


def test_a_message_of_an_earlier_round_is_counted_and_dropped(pair):
    alice, bob, _, counts = pair
    bob.round_id = 5
    alice.send(EndOfRun(round_id=4, reason="done", committed=""))
    alice.send(EndOfRun(round_id=5, reason="done", committed=""))
    assert bob.receive(EndOfRun).round_id == 5
    assert counts == ["classical_frames_stale"]


def test_a_later_rounds_message_is_kept_for_that_round(pair):
    """Bob waits for the end of round 4, but Alice has moved on to round 5 (her last message of
    round 4 was lost): the wait ends, and round 5's message is not lost with it."""
    alice, bob, _, _ = pair
    bob.round_id = 4
    alice.send(RoundAbort(round_id=5, reason="round 5's own abort"))
    with pytest.raises(ProtocolError, match="moved on to round 5"):
        bob.receive(EndOfRun)
    bob.round_id = 5
    with pytest.raises(PeerAborted, match="round 5's own abort"):
        bob.receive(EndOfRun)


def test_a_kept_message_goes_to_the_first_caller_that_expects_its_kind(pair):
    """The last round's ``Committed`` was lost: Bob's wait for it ends on Alice's ``EndOfRun``,
    which must then reach him when he asks for it, still in the last round."""
    alice, bob, _, _ = pair
    bob.round_id = 2
    alice.send(EndOfRun(round_id=3, reason="done", committed="r2-x"))
    with pytest.raises(ProtocolError, match="moved on to round 3"):
        bob.receive(RoundStart)
    assert bob.receive(EndOfRun).committed == "r2-x"


def test_a_peer_abort_ends_the_round_unless_expected(pair):
    alice, bob, _, _ = pair
    alice.send(RoundAbort(round_id=0, reason="QBER too high"))
    with pytest.raises(PeerAborted, match="QBER too high"):
        bob.receive(EndOfRun)
    alice.send(RoundAbort(round_id=0, reason="fine"))
    assert bob.receive(EndOfRun, RoundAbort).reason == "fine"


def test_an_unexpected_kind_is_a_protocol_error(pair):
    alice, bob, _, _ = pair
    alice.send(EndOfRun(round_id=0, reason="done", committed=""))
    with pytest.raises(ProtocolError, match="expected RoundStart from alice, got EndOfRun"):
        bob.receive(RoundStart)


@pytest.mark.parametrize("transport", [QueuePeer, ZmqPeer])
def test_every_transport_opens_frames_on_the_shared_path(transport):
    assert issubclass(transport, FramePeer)
    for method in ("send", "receive", "open"):
        assert method not in vars(transport), f"{transport.__name__} overrides {method}"


def test_a_message_of_the_round_in_progress_can_be_held_for_that_rounds_own_wait(pair):
    """Bob between rounds waits for RoundStart(r + 1); a message of round r coming instead means
    Alice is past it (it was lost): he is told (HELD) and the message waits for round r."""
    alice, bob, _, _ = pair
    bob.round_id = 4
    alice.send(RoundAbort(4, "no announcement"))
    alice.send(RoundStart(6, 0, 10))
    assert bob.receive(RoundStart, EndOfRun, hold_current=True) is HELD
    assert bob.held == RoundAbort(4, "no announcement")
    with pytest.raises(PeerAborted, match="no announcement"):  # round 4's own wait gets it
        bob.receive(RoundStart)
    assert bob.receive(RoundStart) == RoundStart(6, 0, 10)
    # without hold_current the same message is refused, as before
    alice.send(RoundAbort(4, "again"))
    with pytest.raises(PeerAborted):
        bob.receive(RoundStart, EndOfRun)


def test_a_later_rounds_message_can_be_put_back_for_its_round(pair):
    alice, bob, _, _ = pair
    bob.round_id = 1
    alice.send(RoundStart(3, 0, 10))
    later = bob.receive(RoundStart)
    bob.hold(later)
    with pytest.raises(ProtocolError, match="already held"):
        bob.hold(RoundStart(4, 0, 10))
    bob.round_id = 3
    assert bob.receive(RoundStart) == later


def test_a_later_rounds_dialogue_message_never_answers_this_rounds_wait(pair):
    """Alice gave up on round 3 (its messages were lost) and went on; her round-4 SiftingInfo
    reaches Bob while he still waits for round 3's. Taken as round 3's, it would make him
    compare the wrong announcements and leave round 4 without it: it is kept for round 4."""
    from classical.messages import SiftingInfo

    alice, bob, _, _ = pair
    bob.round_id = 3
    sift = SiftingInfo(4, np.zeros(3, np.uint8), np.zeros(3, np.uint8),
                       np.zeros((1, 9), np.int64), b"\x01" * 32)
    alice.send(sift)
    with pytest.raises(ProtocolError, match="moved on to round 4"):
        bob.receive(SiftingInfo)
    bob.round_id = 4
    got = bob.receive(SiftingInfo)
    assert got.round_id == 4 and got.announcement_digest == sift.announcement_digest
