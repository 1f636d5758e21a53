"""The resolved configuration of one run (written to ``RUN_DIR/config.json``)."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from classical.authentication import KeyPool
from classical.secure import LinkKeys, SecureLink, hmac_link, wegman_carter_link
from orchestration.config import Scenario
from orchestration.secrets import NodeSecrets

HOST = "127.0.0.1"
#: The longest ``metrics_linger_s`` (the launcher kills a node 5 s after asking it to stop).
MAX_METRICS_LINGER_S = 4.0


class Resume(BaseModel):
    """A restarted link's session (``orchestration.run``, ``nodes.session``): the round it
    resumes at, the sequence number each direction ``"a->b"`` resumes from, and why."""

    model_config = ConfigDict(extra="forbid")

    round: int = Field(ge=0)
    seqs: dict[str, int] = {}
    restart: int = Field(1, ge=1)
    reason: str = ""


class RunConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    run_dir: Path
    mailboxes: dict[str, str]
    pulses: str  # nature binds it, the users push their pulse batches to it
    records: str  # Charles binds it, nature pushes detection records to it
    connect: dict[str, str] = {}
    message_timeout_s: float = 300.0
    #: how long a user waits for the relay's announcement: it comes only once nature has measured
    #: the whole round, which takes longer than any message of the dialogue (kept apart so that a
    #: short message timeout, as fault-injection tests use, does not cut the measurement short)
    announcement_timeout_s: float = 300.0
    otlp_endpoint: str | None = None
    #: nature's end of the live control plane (``orchestration.control``; None: no control)
    control: str | None = None
    #: each node's Prometheus endpoint, ``host:port`` (``nodes.metrics``; none: no endpoint)
    metrics: dict[str, str] = {}
    #: how long a node keeps serving its endpoint after its last round (so that a scraper sees
    #: its final values); at most ``MAX_METRICS_LINGER_S``, within the launcher's stop grace
    metrics_linger_s: float = Field(0.0, ge=0.0, le=MAX_METRICS_LINGER_S)
    #: the ``link`` label of every series
    link: str = "alice-bob"
    #: also push the metrics over OTLP/HTTP to this URL (``mdiqkd run --otlp-metrics-endpoint``)
    otlp_metrics_endpoint: str | None = None
    #: set when the link restarts after a node died (``runtime.restart``): where it resumes
    resume: Resume | None = None


#: Ports this process has handed out: a port is only reserved by its address in a config until
#: a node binds it, so a later call must not hand it out again (several calls prepare one run:
#: its endpoints, the control plane's, a test's proxy).
_HANDED_OUT: set[int] = set()
_PORTS_LOCK = threading.Lock()


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports on 127.0.0.1 that the operating system has free now and that this
    process has not handed out before."""
    with _PORTS_LOCK:
        socks: list[socket.socket] = []
        try:
            ports: list[int] = []
            while len(ports) < n:
                s = socket.socket()
                s.bind((HOST, 0))
                socks.append(s)  # held until all are chosen: the OS gives distinct ones
                port = s.getsockname()[1]
                if port not in _HANDED_OUT:
                    ports.append(port)
                if len(socks) > n + 4096:
                    raise OSError("no free port on 127.0.0.1 left that was not handed out")
            _HANDED_OUT.update(ports)
            return ports
        finally:
            for s in socks:
                s.close()


#: The nodes with a metrics endpoint.
METRICS_NODES = ("alice", "bob", "charles", "nature")


def local_run_config(run_dir: Path, otlp_endpoint: str | None = None,
                     metrics_host: str = HOST) -> RunConfig:
    ports = free_ports(5 + len(METRICS_NODES))
    return RunConfig(run_dir=run_dir,
                     mailboxes={n: f"tcp://{HOST}:{p}" for n, p in
                                zip(("alice", "bob", "charles"), ports[:3], strict=True)},
                     pulses=f"tcp://{HOST}:{ports[3]}", records=f"tcp://{HOST}:{ports[4]}",
                     otlp_endpoint=otlp_endpoint,
                     metrics={n: f"{metrics_host}:{p}" for n, p in
                              zip(METRICS_NODES, ports[5:], strict=True)})


def _pool(scenario: Scenario, seed: int) -> bytes:
    """A pre-shared pool from its seed (the same bytes at both ends of its direction; never
    logged). Emulated distribution: in a deployment these bytes come from a courier or an
    earlier QKD session."""
    return np.random.default_rng(seed).bytes(scenario.authentication.initial_pool_bytes)


def secure_links(role: str, scenario: Scenario, mine: NodeSecrets) -> dict[str, SecureLink]:
    """Authenticated links from ``role`` to each peer it holds pools with."""
    links = {}
    for peer, (out_seed, in_seed) in sorted(mine.pools.items()):
        outgoing, incoming = _pool(scenario, out_seed), _pool(scenario, in_seed)
        if scenario.authentication.mode == "hmac":
            link = hmac_link(outgoing[:32], incoming[:32], role, peer)
        else:
            link = wegman_carter_link(LinkKeys(KeyPool(outgoing), KeyPool(incoming)), role, peer)
        link.opener.allow_gaps = True
        links[peer] = link
    return links
