"""Each process's own secrets, derived by the orchestrator and handed to that process alone.

The scenario's master seed never reaches a node: ``prepare_run_dir`` writes ``config.json`` without
it, and each node's secrets to ``RUN_DIR/<node>/secrets.json`` (owner-only), holding only:

* **alice**, **bob**: the user's settings key (which basis, bit and intensity at every slot), its
  protocol seed (Cascade's shuffles, the verification hash key, the privacy-amplification seed),
  and the seeds of the pre-shared pools of its own links (with the other user and with Charles);
* **charles**: the seeds of the pools of his links with Alice and with Bob, and, for a game day,
  the faults of his own software (``relay_faults``: ``malicious_relay`` in a software mode,
  ``relay_firmware_bug``, and the ``clear_faults`` actions that end them,
  ``nodes.relay_faults.charles_entries``) with the seed of their randomness (``relay_seed``);
  nothing of the users' and nothing of nature's faults;
* **nature**: the sampling seed of the detectors, the polarization drift's seed, and the game
  day's fault timeline (the scenario's ``method`` as plain values): when and how the link will be
  broken is known to the channel emulator alone, never to the users (whose estimation must not
  know, e.g., a miscalibration's factor) nor to Charles.

A pool seed belongs to one direction of one link and is given to both of its ends, which is what a
pre-shared secret is. With ``entropy: seeded`` (the default, for reproducible emulation) every
value is derived from the master seed by name (``channel.rng.derive_seed``), so the same scenario
and seed give the same keys on any backend. With ``entropy: os`` every value is drawn from the
operating system's generator (``secrets``), and the users draw their protocol randomness from it
too (``classical.entropy.OsRandom``): nothing is reproducible, as with real devices.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from channel.impairments import TimelineEntry, fault_rounds, fault_windows
from channel.rng import derive_seed
from nodes.relay_faults import charles_entries
from orchestration.config import Scenario, fault_timeline

NODES = ("alice", "bob", "charles", "nature")
_LINKED = ("alice", "bob", "charles")  # the nodes with authenticated classical links
SECRETS_FILE = "secrets.json"


class NodeSecrets(BaseModel):
    """What one node may know. ``pools``: peer → (seed of the pool of messages to that peer,
    seed of the pool of messages from it). ``fault_timeline``: nature's only (the game day's
    ``method``). ``relay_faults``, ``relay_seed``: Charles's only (his software's faults)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    role: str
    entropy: str = "seeded"
    settings_key: int | None = None
    protocol_seed: int | None = None
    nature_seed: int | None = None
    drift_seed: int | None = None
    pools: dict[str, tuple[int, int]] = {}
    fault_timeline: tuple[TimelineEntry, ...] = ()
    #: a user's only: the rounds ``[first, stop)`` in which its key store has no room (a game
    #: day's ``full`` fault on it), nothing else of the game day
    store_full_rounds: tuple[tuple[int, int], ...] = ()
    #: a user's only: the rounds after whose result the calibration loops search whatever the
    #: cost (a game day's ``calibrate`` actions), nothing else of the game day
    calibrate_rounds: tuple[int, ...] = ()
    #: nature's only: the token the orchestrator's control requests carry (the live control
    #: plane, ``orchestration.control``); drawn from the OS, it steers the link
    control_token: str = ""
    relay_seed: int | None = None
    relay_faults: tuple[TimelineEntry, ...] = ()


def _draw(scenario: Scenario, name: str) -> int:
    if scenario.entropy == "os":
        return secrets.randbits(64)  # derive_seed's range
    return derive_seed(scenario.seed, name)


def node_secrets(scenario: Scenario) -> dict[str, NodeSecrets]:
    """Every node's secrets (derived from the master seed, or drawn from the OS)."""
    pool = {(a, b): _draw(scenario, f"pre-shared secret {a}->{b}")
            for a in _LINKED for b in _LINKED if a != b}

    def pools(me: str) -> dict[str, tuple[int, int]]:
        return {p: (pool[me, p], pool[p, me]) for p in _LINKED if p != me}

    out = {u: NodeSecrets(role=u, entropy=scenario.entropy,
                          settings_key=_draw(scenario, f"{u}_settings"),
                          protocol_seed=_draw(scenario, f"{u}_protocol"), pools=pools(u),
                          store_full_rounds=store_full_rounds(scenario, u),
                          calibrate_rounds=calibrate_rounds(scenario))
           for u in ("alice", "bob")}
    out["charles"] = NodeSecrets(role="charles", entropy=scenario.entropy, pools=pools("charles"),
                                 relay_seed=_draw(scenario, "charles relay faults"),
                                 relay_faults=charles_entries(fault_timeline(scenario)))
    out["nature"] = NodeSecrets(role="nature", entropy=scenario.entropy,
                                nature_seed=_draw(scenario, "nature"),
                                drift_seed=_draw(scenario, "polarization drift"),
                                fault_timeline=fault_timeline(scenario))
    return out


def store_full_rounds(scenario: Scenario, user: str) -> tuple[tuple[int, int], ...]:
    """The rounds in which ``user``'s key store has no room: each ``full`` fault on
    ``keystore/<user>`` over the rounds it overlaps (``channel.impairments.fault_rounds``)."""
    windows = (fault_rounds(f, scenario.clock_rate_hz, scenario.frame_bits, scenario.round_slots)
               for f in fault_windows(fault_timeline(scenario))
               if f.kind == "full" and f.target == f"keystore/{user}")
    return tuple(w for w in windows if w[1] > w[0])


def calibrate_rounds(scenario: Scenario) -> tuple[int, ...]:
    """The rounds in which a ``calibrate`` action falls: the loops search after reading that
    round's result (both users run the same loops, so both are told)."""
    per_round = scenario.round_slots / scenario.clock_rate_hz
    return tuple(sorted({min(int(e.at_s // per_round), scenario.run_rounds - 1)
                         for e in fault_timeline(scenario)
                         if e.is_action and e.kind == "calibrate"}))


def write_node_secrets(run_dir: Path, all_secrets: dict[str, NodeSecrets]) -> None:
    """``RUN_DIR/<node>/secrets.json``, created owner-only (0600) in an owner-only directory."""
    for name, s in all_secrets.items():
        node_dir = run_dir / name
        node_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = node_dir / SECRETS_FILE
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(s.model_dump_json())


def read_node_secrets(run_dir: Path, role: str) -> NodeSecrets:
    data = json.loads((run_dir / role / SECRETS_FILE).read_text())
    s = NodeSecrets.model_validate(data)
    if s.role != role:
        raise ValueError(f"{run_dir / role / SECRETS_FILE} holds {s.role}'s secrets, not {role}'s")
    return s
