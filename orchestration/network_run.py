"""Running a network (``orchestration.network``): every link at once, then ``network.json``.

Each link is an ordinary run (``orchestration.run.prepare_run_dir`` and ``execute``) in its own
sub-directory ``RUN_DIR/links/NAME/``, with its own ``summary.json`` and fingerprint; the links
run concurrently, one thread each watching its nodes:

- ``local``: each link's four node programs as local processes (``LocalProcessLauncher``);
- ``ray``: each link's node programs as Ray actors (``RayLauncher``) on one Ray shared by every
  link (the caller's, a cluster joined, or a private one started for the network and stopped
  after it), each actor declaring ``node_cpus`` CPUs so that Ray packs them.

Placement on Ray (``plan_sites``, ``place_network``): node programs go by *site* (a link's
Alice, Bob and Charles sites; nature with Charles). When the cluster advertises a resource named
after every site, each program asks for its site's resource (``ray start --resources
'{"hub": 1}'`` pins a site to a host). Otherwise the sites are split into ``k`` groups, ``k`` the
number of the cluster's nodes with CPUs (at most the number of sites), one bundle of a
``STRICT_SPREAD`` placement group each, so that every group is on a node of its own and the
whole network is placed at once or not at all. A site is in exactly one group, so the programs of
links sharing a site are on one node; the groups are chosen greedily, heaviest site first, each
site to the least loaded group holding no other site of its links: with three or more nodes,
each link's Alice, Bob and Charles are on three different nodes (when no cycle of shared sites
forbids it; then a site joins the least loaded group, and ``network.json`` lists the links whose
sites share a node). A bundle must fit on one node: ``node_cpus`` times its programs.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestration.launchers import NODE_ORDER
from orchestration.network import SITE_ROLE, Network, NetworkLink
from orchestration.run import (
    Progress,
    RunFailed,
    execute,
    prepare_run_dir,
    stop_signals_handled,
)

#: The sub-directory of a network's run directory that holds one run directory per link.
LINKS_DIR = "links"


# --- placement -----------------------------------------------------------------------------------


def site_weights(network: Network) -> dict[str, int]:
    """Site → the node programs it holds (nature counts at Charles's site)."""
    weights: dict[str, int] = dict.fromkeys(network.sites, 0)
    for link in network.links:
        for node in NODE_ORDER:
            weights[link.sites[SITE_ROLE[node]]] += 1
    return weights


def plan_sites(network: Network, groups: int) -> dict[str, int]:
    """Site → group (0 … ``groups`` - 1): every site in one group; the sites of one link in
    different groups where ``groups`` allows; heaviest site first, each to the least loaded
    group it may join (module docstring)."""
    weights = site_weights(network)
    order = sorted(weights, key=lambda s: (-weights[s], network.sites.index(s)))
    neighbours: dict[str, set[str]] = {s: set() for s in weights}
    for link in network.links:
        sites = set(link.sites.values())
        for s in sites:
            neighbours[s] |= sites - {s}
    load = [0] * groups
    group: dict[str, int] = {}
    for site in order:
        taken = {group[n] for n in neighbours[site] if n in group}
        allowed = [g for g in range(groups) if g not in taken] or list(range(groups))
        best = min(allowed, key=lambda g: (load[g], g))
        group[site] = best
        load[best] += weights[site]
    return group


def colocated_links(network: Network, group: dict[str, int]) -> list[str]:
    """The links two of whose distinct sites share a group (so a node)."""
    out = []
    for link in network.links:
        sites = set(link.sites.values())
        if len({group[s] for s in sites}) < len(sites):
            out.append(link.name)
    return out


@dataclass
class NetworkPlacement:
    """How a network's node programs are placed on Ray: ``mode`` ``resources`` or ``spread``,
    each link's ``Placed`` actor options, the sites of each bundle, and the placement group."""

    mode: str
    placed: dict[str, Any]  # link name → orchestration.ray_launcher.Placed
    bundles: list[list[str]] = field(default_factory=list)
    colocated: list[str] = field(default_factory=list)
    group: Any = None

    def record(self) -> dict[str, Any]:
        return {"mode": self.mode, "bundles": self.bundles, "colocated_links": self.colocated}

    def remove(self) -> None:
        if self.group is not None:
            from ray.util.placement_group import remove_placement_group

            with contextlib.suppress(Exception):
                remove_placement_group(self.group)
            self.group = None


def place_network(network: Network, node_cpus: float) -> NetworkPlacement:
    """Place the network on the connected Ray (module docstring); RuntimeError if Ray cannot
    within ``PLACEMENT_TIMEOUT_S``."""
    import ray
    from ray.util.placement_group import placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    from orchestration.ray_launcher import PLACEMENT_TIMEOUT_S, Placed

    resources = ray.cluster_resources()
    if all(resources.get(site, 0) > 0 for site in network.sites):
        return NetworkPlacement("resources", {link.name: Placed("network-resources", {
            n: {"num_cpus": node_cpus, "resources": {link.sites[SITE_ROLE[n]]: 0.01}}
            for n in NODE_ORDER}) for link in network.links})
    nodes = [n for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("CPU", 0)]
    groups = max(1, min(len(nodes), len(network.sites)))
    group_of = plan_sites(network, groups)
    weights = site_weights(network)
    bundles = [[s for s in network.sites if group_of[s] == g] for g in range(groups)]
    pg = placement_group([{"CPU": node_cpus * sum(weights[s] for s in sites)}
                          for sites in bundles], strategy="STRICT_SPREAD")
    done, _ = ray.wait([pg.ready()], timeout=PLACEMENT_TIMEOUT_S)
    if not done:
        with contextlib.suppress(Exception):
            from ray.util.placement_group import remove_placement_group

            remove_placement_group(pg)
        raise RuntimeError(
            f"Ray could not place the network ({groups} bundles of "
            f"{[round(node_cpus * sum(weights[s] for s in b), 3) for b in bundles]} CPUs, "
            f"one per node, on {len(nodes)} nodes: {resources}) within "
            f"{PLACEMENT_TIMEOUT_S:.0f} s; lower node_cpus or add nodes")
    placed = {link.name: Placed("network-spread", {n: {
        "num_cpus": node_cpus, "scheduling_strategy": PlacementGroupSchedulingStrategy(
            pg, placement_group_bundle_index=group_of[link.sites[SITE_ROLE[n]]])}
        for n in NODE_ORDER}) for link in network.links}
    return NetworkPlacement("spread", placed, bundles, colocated_links(network, group_of), pg)


def private_ray_cpus(network: Network, node_cpus: float) -> int:
    """The CPUs a private Ray advertises for a network: every node program's share, and at
    least what a single link's private Ray has."""
    return max(2, os.cpu_count() or 1, math.ceil(node_cpus * len(NODE_ORDER) *
                                                  len(network.links)))


# --- network.json --------------------------------------------------------------------------------


def link_record(link: NetworkLink, status: str, summary: dict[str, Any] | None,
                error: str | None = None, ray_nodes: dict[str, str] | None = None,
                deviated: bool | None = None) -> dict[str, Any]:
    """One link's line of ``network.json`` (docs/run-directory.md); ``deviated``: its game
    day's steady-state hypothesis failed (its ``journal.json``; None without a verdict)."""
    s = summary or {}
    return {"name": link.name, "status": status, "error": error, "sites": link.sites,
            "seed": link.seed, "scenario": link.source,
            "run_dir": f"{LINKS_DIR}/{link.name}",
            "rounds": s.get("rounds"), "aborted": s.get("aborted"),
            "abort_reasons": s.get("abort_reasons", []),
            "secure_bits": s.get("secure_bits"),
            "emulated_seconds": s.get("emulated_seconds"),
            "key_rate_bps_emulated": s.get("key_rate_bps_emulated"),
            "qber": s.get("qber", {"Z": None, "X": None}),
            "keys_match": s.get("keys_match"),
            "determinism_fingerprint": s.get("determinism_fingerprint"),
            "wall_seconds": s.get("wall_seconds"),
            "interrupted_by": s.get("interrupted_by"),
            "deviated": deviated,
            "ray_nodes": ray_nodes}


def _deviated(link_dir: Path) -> bool | None:
    """Whether a link's steady-state hypothesis failed, from its ``journal.json`` (None: no
    verdict, e.g. a link that failed before writing one)."""
    try:
        value = json.loads((link_dir / "journal.json").read_text()).get("deviated")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, bool) else None


def network_totals(links: list[dict[str, Any]], wall_seconds: float) -> dict[str, Any]:
    """The network's totals over its links' records. The links run side by side in emulated
    time, so the network's key rate is the sum of theirs; throughput is the secure bits of all
    links per wall second of the whole network."""
    def total(key: str) -> int:
        return sum(r[key] or 0 for r in links)

    def worst(basis: str) -> float | None:
        values = [r["qber"][basis] for r in links if r["qber"][basis] is not None]
        return max(values) if values else None

    secure = total("secure_bits")
    return {"links": len(links),
            "completed": sum(r["status"] == "completed" for r in links),
            "interrupted": sum(r["status"] == "interrupted" for r in links),
            "failed": sum(r["status"] == "failed" for r in links),
            "deviated": sum(r.get("deviated") is True for r in links),
            "rounds": total("rounds"), "aborted": total("aborted"), "secure_bits": secure,
            "key_rate_bps_emulated": sum(r["key_rate_bps_emulated"] or 0.0 for r in links),
            "keys_match": all(r["keys_match"] is True for r in links),
            "qber_max": {"Z": worst("Z"), "X": worst("X")},
            "wall_seconds": wall_seconds,
            "secure_bits_per_wall_second": secure / wall_seconds if wall_seconds else None}


# --- running -------------------------------------------------------------------------------------


def run_network(network: Network, run_dir: Path, backend: str = "local",
                ray_options: Any = None,
                on_progress: Callable[[str, Progress], None] | None = None,
                **prepare: Any) -> dict[str, Any]:
    """Run every link of ``network`` at once in ``run_dir`` (created, empty) and write
    ``network.json``; returns it. ``backend`` ``local`` or ``ray`` (``ray_options``: a
    ``RayOptions``); ``prepare``: ``prepare_run_dir``'s options, for every link. A link that
    fails does not stop the others; its record says why."""
    run_dir.mkdir(parents=True, exist_ok=True)
    if any(run_dir.iterdir()):
        raise FileExistsError(f"run directory {run_dir} is not empty; choose another --out")
    dirs = {}
    for link in network.links:  # one after another: the ports each takes are distinct
        dirs[link.name] = prepare_run_dir(link.scenario, run_dir / LINKS_DIR / link.name,
                                          link=link.name, **prepare)
    t0 = time.monotonic()
    requested: list[str] = []
    with contextlib.ExitStack() as stack:
        launchers: dict[str, Any] = {}
        placement: NetworkPlacement | None = None
        if backend == "ray":
            from orchestration.ray_launcher import PortBook, RayLauncher, RayOptions

            ray_options = ray_options or RayOptions()
            placement = stack.enter_context(_network_ray(network, ray_options))

            ports = PortBook()
            launchers = {link.name: RayLauncher(ray_options, placement.placed[link.name], ports)
                         for link in network.links}
        # a stop signal is recorded; every link then stops in order
        stack.enter_context(stop_signals_handled(requested.append))
        results = _run_links(network, dirs, launchers, on_progress, requested)
    wall = time.monotonic() - t0
    records = []
    for link in network.links:
        status, summary, error = results[link.name]
        launcher = launchers.get(link.name)
        nodes = {n: w["node_id"] for n, w in launcher.where.items()} if launcher else None
        records.append(link_record(link, status, summary, error, nodes,
                                   _deviated(dirs[link.name])))
    out = {"format": "mdiqkd-network/1", "title": network.title, "seed": network.seed,
           "backend": backend, "placement": placement.record() if placement else None,
           "interrupted_by": requested[0] if requested else None,
           "links": records, "totals": network_totals(records, wall)}
    (run_dir / "network.json").write_text(json.dumps(out, indent=2))
    return out


@contextlib.contextmanager
def _network_ray(network: Network, options: Any):  # type: ignore[no-untyped-def]
    """The Ray every link shares, with the network placed on it; a private Ray started here
    (``options.address`` None and no Ray connected) is stopped after, with its directory."""
    import dataclasses
    import shutil

    from orchestration.ray_launcher import RAY_ENV, init_ray

    if options.address is None:
        os.environ.update(RAY_ENV)  # read when Ray is imported: before it is, then
    import ray

    temp_dir, started = None, False
    try:
        if not ray.is_initialized():
            started = True
            if options.address is None and options.num_cpus is None:
                options = dataclasses.replace(
                    options, num_cpus=private_ray_cpus(network, options.node_cpus))
            temp_dir = init_ray(options)
        placement = place_network(network, options.node_cpus)
    except Exception as e:  # noqa: BLE001 - Ray's errors, said in one line
        if started:
            ray.shutdown()
        where = options.address or "a private Ray on this machine"
        lines = [x.strip() for x in str(e).splitlines() if x.strip()]
        raise RunFailed(f"Ray backend ({where}): {type(e).__name__}: "
                        f"{lines[0] if lines else ''}") from e
    try:
        yield placement
    finally:
        placement.remove()
        if started:
            ray.shutdown()
            if temp_dir is not None:
                shutil.rmtree(temp_dir, ignore_errors=True)


def _run_links(network: Network, dirs: dict[str, Path], launchers: dict[str, Any],
               on_progress: Callable[[str, Progress], None] | None,
               requested: list[str]) -> dict[str, tuple[str, dict[str, Any] | None, str | None]]:
    """Each link's (status, summary, error), the links run in threads at once."""
    def one(link: NetworkLink) -> tuple[str, dict[str, Any] | None, str | None]:
        progress = (lambda p: on_progress(link.name, p)) if on_progress else None
        try:
            summary = execute(link.scenario, dirs[link.name], launchers.get(link.name),
                              on_progress=progress, fingerprint=True,
                              stop_requested=lambda: requested[0] if requested else None)
        except RunFailed as e:
            return "failed", None, str(e)
        except Exception as e:  # noqa: BLE001 - one link's bug must not hide the others'
            return "failed", None, f"{type(e).__name__}: {e}"
        return ("interrupted" if summary["interrupted"] else "completed"), summary, None

    with ThreadPoolExecutor(max_workers=len(network.links),
                            thread_name_prefix="link") as pool:
        futures = {link.name: pool.submit(one, link) for link in network.links}
        pending = set(futures.values())
        while pending:  # short waits: the main thread takes the stop signals meanwhile
            _, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
        return {name: f.result() for name, f in futures.items()}
