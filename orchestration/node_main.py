"""Entry point of one node process: ``python -m orchestration.node_main ROLE RUN_DIR``.

Reads ``RUN_DIR/config.json`` (public: the scenario without its seed, the endpoints) and the
node's own ``RUN_DIR/ROLE/secrets.json`` (``orchestration.secrets``), builds the node, sets up
telemetry, and runs the node until its work is done or SIGINT/SIGTERM arrives; then it flushes
traces and metrics and exits 0. Any other failure exits 1 with the error on stderr.
"""

from __future__ import annotations

import json
import signal
import sys
import traceback
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

# Only the standard library is imported before the signal handlers are in place (main): the
# project's modules load numba and take seconds, and a SIGTERM in that time must still end the
# node cleanly.
if TYPE_CHECKING:
    from orchestration.config import Scenario
    from orchestration.runconfig import RunConfig
    from orchestration.secrets import NodeSecrets


class _Stop(Exception):
    pass


def _on_signal(signum: int, frame: FrameType | None) -> None:
    raise _Stop(signal.Signals(signum).name)


def build_node(role: str, run: RunConfig, scenario: Scenario, secrets: NodeSecrets, tracer):  # type: ignore[no-untyped-def]
    """The node object of ``role``, built from public configuration and its own secrets only."""
    from nodes.base import Endpoints, NodeContext
    from nodes.records import RoundLayout
    from nodes.transport import classical_max_message_bytes
    from orchestration.config import (
        build_charles_config,
        build_link,
        build_round_config,
        build_settings,
        settings_plan,
    )
    from orchestration.runconfig import secure_links

    endpoints = Endpoints(run.mailboxes, run.pulses, run.records, run.connect)
    ctx = NodeContext(role, endpoints, secure_links(role, scenario, secrets), tracer,
                      run.run_dir, timeout_s=run.message_timeout_s,
                      max_message_bytes=classical_max_message_bytes(scenario.round_slots))
    if role == "nature":
        from nodes.nature import ChannelEmulator, NatureNode
        from nodes.transport import PulseLayout

        link = build_link(scenario, secrets.drift_seed)
        plans = {u: settings_plan(scenario, u) for u in ("alice", "bob")}  # type: ignore[arg-type]
        layout = PulseLayout(scenario.rounds, scenario.round_frames, scenario.batch_frames,
                             scenario.frame_bits, {u: p.n_combos for u, p in plans.items()})
        emulator = ChannelEmulator(link, plans, _required(secrets.nature_seed, "nature"), layout)
        return ctx, NatureNode(ctx, emulator, run.records)
    if role == "charles":
        from nodes.charles import CharlesNode

        layout = RoundLayout(scenario.rounds, scenario.round_frames, scenario.batch_frames,
                             scenario.frame_bits)
        return ctx, CharlesNode(ctx, layout, build_charles_config(scenario), run.records)
    from nodes.users import UserNode, UserPlan

    ctx.peers["charles"].timeout_s = max(run.message_timeout_s, run.announcement_timeout_s)

    settings = build_settings(scenario, role, _required(secrets.settings_key, role))  # type: ignore[arg-type]
    plan = UserPlan(role, settings, build_round_config(scenario),  # type: ignore[arg-type]
                    scenario.rounds, scenario.round_frames, scenario.batch_frames,
                    _required(secrets.protocol_seed, role), scenario.postprocessing.qber_prior,
                    scenario.clock_rate_hz, secrets.entropy == "os")
    return ctx, UserNode(ctx, plan)


def _required(value: int | None, role: str) -> int:
    if value is None:
        raise ValueError(f"{role}'s secrets lack a value it needs")
    return value


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    role = args[0] if args else "node"
    try:
        from orchestration.config import Scenario
        from orchestration.runconfig import RunConfig
        from orchestration.secrets import NODES, read_node_secrets
        from orchestration.telemetry import setup_tracing

        if len(args) != 2 or args[0] not in NODES:
            print(f"usage: python -m orchestration.node_main {'|'.join(NODES)} RUN_DIR",
                  file=sys.stderr)
            return 2
        run_dir = Path(args[1])
        data = json.loads((run_dir / "config.json").read_text())
        run = RunConfig.model_validate(data["run"])
        scenario = Scenario.model_validate(data["scenario"])  # public: no master seed in it
        secrets = read_node_secrets(run_dir, role)
        tracer, shutdown = setup_tracing(role, run_dir, scenario.tracing, run.otlp_endpoint)
    except _Stop as e:
        print(f"{role}: stopped by {e} before it started", file=sys.stderr)
        return 0
    ctx = node = None
    code = 0
    try:
        ctx, node = build_node(role, run, scenario, secrets, tracer)
        node.run()
    except _Stop as e:
        print(f"{role}: stopped by {e}", file=sys.stderr)
    except Exception:  # noqa: BLE001 - report and fail loudly, naming the node
        print(f"{role}: failed\n{traceback.format_exc()}", file=sys.stderr)
        code = 1
    finally:
        try:
            if node is not None:
                node.close()
            if ctx is not None:
                ctx.close()
        finally:
            shutdown()
    return code


if __name__ == "__main__":
    sys.exit(main())
