"""The resolved configuration of one run (written to ``RUN_DIR/config.json``)."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict

from channel.rng import derive_seed
from classical.authentication import KeyPool
from classical.secure import LinkKeys, SecureLink, hmac_link, wegman_carter_link
from orchestration.config import Scenario

HOST = "127.0.0.1"


class RunConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    run_dir: Path
    mailboxes: dict[str, str]
    pulses: str
    connect: dict[str, str] = {}
    message_timeout_s: float = 300.0
    otlp_endpoint: str | None = None


def free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind((HOST, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def local_run_config(run_dir: Path, otlp_endpoint: str | None = None) -> RunConfig:
    ports = free_ports(4)
    return RunConfig(run_dir=run_dir,
                     mailboxes={n: f"tcp://{HOST}:{p}" for n, p in
                                zip(("alice", "bob", "charles"), ports[:3], strict=True)},
                     pulses=f"tcp://{HOST}:{ports[3]}", otlp_endpoint=otlp_endpoint)


def _pair_secret(scenario: Scenario, sender: str, receiver: str) -> bytes:
    """The pre-shared secret of messages from ``sender`` to ``receiver`` (emulated distribution:
    derived from the scenario seed, identical at both ends, never logged)."""
    seed = derive_seed(scenario.seed, f"pre-shared secret {sender}->{receiver}")
    return np.random.default_rng(seed).bytes(scenario.authentication.initial_pool_bytes)


def secure_links(role: str, run: RunConfig, scenario: Scenario) -> dict[str, SecureLink]:
    """Authenticated links from ``role`` to each other node."""
    links = {}
    for peer in ("alice", "bob", "charles"):
        if peer == role:
            continue
        outgoing, incoming = _pair_secret(scenario, role, peer), _pair_secret(scenario, peer, role)
        if scenario.authentication.mode == "hmac":
            link = hmac_link(outgoing[:32], incoming[:32], role, peer)
        else:
            link = wegman_carter_link(LinkKeys(KeyPool(outgoing), KeyPool(incoming)), role, peer)
        link.opener.allow_gaps = True
        links[peer] = link
    return links
