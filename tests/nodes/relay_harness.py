"""The relay's receive paths without a network: nature (``NatureNode``) and Charles
(``CharlesNode``) on in-process contexts, nature's records handed to Charles over the records wire
format, Charles's announcements recorded, and honest pulse batches to build attacks from."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np
import zmq
from opentelemetry import trace

from channel.settings import SettingsGenerator
from nodes.charles import CharlesNode
from nodes.nature import ChannelEmulator, NatureNode
from nodes.records import RoundLayout
from nodes.transport import Counters, PulseBatch, PulseLayout
from orchestration.config import (
    DEFAULT_SCENARIO,
    build_charles_config,
    build_link,
    build_settings,
    load_scenario,
)

#: Small frames, many short rounds whose last batch is shorter than the others.
FRAME_BITS = 10
ROUNDS, ROUND_FRAMES, BATCH_FRAMES = 1 << 20, 3, 2
_endpoints = itertools.count()


@dataclass
class Recorder:
    """A peer that keeps what Charles sends."""

    sent: list = field(default_factory=list)

    def send(self, message) -> None:
        self.sent.append(message)


class Relay:
    """Nature and Charles, fed pulse messages by hand (``on_pulses``)."""

    def __init__(self) -> None:
        scenario = load_scenario(DEFAULT_SCENARIO, {"frame_bits": FRAME_BITS})
        self.users: dict[str, SettingsGenerator] = {
            u: build_settings(scenario, u) for u in ("alice", "bob")}  # type: ignore[arg-type]
        combos = {u: g.plan.n_combos for u, g in self.users.items()}
        self.layout = PulseLayout(ROUNDS, ROUND_FRAMES, BATCH_FRAMES, FRAME_BITS, combos)
        self.nature = ChannelEmulator(build_link(scenario),
                                      {u: g.plan for u, g in self.users.items()}, 7, self.layout)
        self.counters = Counters()
        self.peers = {"alice": Recorder(), "bob": Recorder()}
        self.context = zmq.Context()
        ctx = SimpleNamespace(zmq=self.context, counters=self.counters, peers=self.peers,
                              endpoints=SimpleNamespace(pulses=f"inproc://pulses-{next(_endpoints)}"),
                              tracer=trace.get_tracer("tests"), stop=None,
                              write_metrics=lambda extra=None: None,
                              warm_up=lambda compile_kernels: None)
        self.nature_node = NatureNode(ctx, self.nature)  # type: ignore[arg-type]
        self.records_endpoint = f"inproc://records-{next(_endpoints)}"
        self.round_layout = RoundLayout(ROUNDS, ROUND_FRAMES, BATCH_FRAMES, FRAME_BITS)
        self.charles = CharlesNode(ctx, self.round_layout, build_charles_config(scenario),  # type: ignore[arg-type]
                                   self.records_endpoint)

    def on_pulses(self, parts: list[bytes]) -> None:
        """One pulse message through nature, and its records (if any) through Charles."""
        out = self.nature_node.on_pulses(parts)
        if out is not None:
            self.charles.on_records(out.to_parts())

    def batch(self, user: str, round_id: int, index: int) -> PulseBatch:
        """The honest batch number ``index`` of ``user`` in ``round_id``."""
        gen = self.users[user]
        first = round_id * ROUND_FRAMES + index * BATCH_FRAMES
        stop = (round_id + 1) * ROUND_FRAMES
        n = min(BATCH_FRAMES, stop - first)
        counts = np.array([gen.frame_counts(f) for f in range(first, first + n)], np.int64)
        return PulseBatch(user, round_id, first, counts, gen.key, first + n == stop,
                          "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01")

    def parts(self, user: str, round_id: int, index: int) -> list[bytes]:
        header, counts = self.batch(user, round_id, index).to_parts()
        return [header, counts.tobytes()]

    def count(self, name: str) -> int:
        return self.counters.values.get(name, 0)

    def announced(self) -> list[int]:
        return [a.round_id for a in self.peers["alice"].sent]

    def close(self) -> None:
        self.nature_node.close()
        self.charles.close()
        self.context.term()


BATCHES_PER_ROUND = -(-ROUND_FRAMES // BATCH_FRAMES)
