"""Entry point of one node process: ``python -m orchestration.node_main ROLE RUN_DIR``.

Reads ``RUN_DIR/config.json`` (written by the launcher), builds the node's plain values, sets up
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

from orchestration.config import (
    Scenario,
    build_charles_config,
    build_link,
    build_round_config,
    build_settings,
    user_keys,
)
from orchestration.runconfig import RunConfig, secure_links
from orchestration.telemetry import setup_tracing


class _Stop(Exception):
    pass


def _on_signal(signum: int, frame: FrameType | None) -> None:
    raise _Stop(signal.Signals(signum).name)


def build_node(role: str, run: RunConfig, scenario: Scenario, tracer):  # type: ignore[no-untyped-def]
    from nodes.base import Endpoints, NodeContext
    from nodes.transport import PulseLayout, classical_max_message_bytes

    endpoints = Endpoints(run.mailboxes, run.pulses, run.connect)
    ctx = NodeContext(role, endpoints, secure_links(role, run, scenario), tracer, run.run_dir,
                      timeout_s=run.message_timeout_s,
                      max_message_bytes=classical_max_message_bytes(scenario.round_slots))
    if role == "charles":
        from nodes.charles import ChannelEmulator, CharlesNode

        link = build_link(scenario)
        plans = {u: build_settings(scenario, u).plan for u in ("alice", "bob")}  # type: ignore[arg-type]
        layout = PulseLayout(scenario.rounds, scenario.round_frames, scenario.batch_frames,
                             scenario.frame_bits, {u: p.n_combos for u, p in plans.items()})
        nature = ChannelEmulator(link, plans, user_keys(scenario)["nature"], layout)
        return ctx, CharlesNode(ctx, nature, build_charles_config(scenario))
    from nodes.users import UserNode, UserPlan

    plan = UserPlan(role, build_settings(scenario, role), build_round_config(scenario),  # type: ignore[arg-type]
                    scenario.rounds, scenario.round_frames, scenario.batch_frames,
                    user_keys(scenario)[f"{role}_protocol"], scenario.postprocessing.qber_prior,
                    scenario.clock_rate_hz)
    return ctx, UserNode(ctx, plan)


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    if len(args) != 2 or args[0] not in ("alice", "bob", "charles"):
        print("usage: python -m orchestration.node_main alice|bob|charles RUN_DIR", file=sys.stderr)
        return 2
    role, run_dir = args[0], Path(args[1])
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    data = json.loads((run_dir / "config.json").read_text())
    run = RunConfig.model_validate(data["run"])
    scenario = Scenario.model_validate(data["scenario"])
    tracer, shutdown = setup_tracing(role, run_dir, scenario.tracing, run.otlp_endpoint)
    ctx = node = None
    code = 0
    try:
        ctx, node = build_node(role, run, scenario, tracer)
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
