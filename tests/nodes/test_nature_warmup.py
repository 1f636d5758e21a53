"""The channel emulator's warm-up compiles what measuring real pulse batches runs.

Run in a fresh interpreter with an empty numba cache, so that nothing compiled earlier in the test
session (or cached on disk) can hide a kernel version the warm-up missed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

_PROBE = textwrap.dedent("""
    import json
    import numba.core.dispatcher as dispatcher
    from tests.nodes.relay_harness import BATCHES_PER_ROUND, Relay

    relay = Relay()
    relay.nature.warm_up()
    compiled = []
    original = dispatcher.Dispatcher.compile
    def recording(self, sig):
        compiled.append(f"{self.py_func.__module__}.{self.py_func.__qualname__}{sig}")
        return original(self, sig)
    dispatcher.Dispatcher.compile = recording
    before = relay.count("coincidence_records_total")
    for round_id in range(2):
        for index in range(BATCHES_PER_ROUND):
            for user in ("alice", "bob"):
                relay.on_pulses(relay.parts(user, round_id, index))
    print(json.dumps({"compiled": compiled, "announced": relay.announced(),
                      "accepted": relay.count("pulse_batches_accepted_total")}))
""")


def test_after_the_warm_up_measuring_pulse_batches_compiles_no_sampler_kernel(tmp_path):
    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba"),
           "PYTHONPATH": os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True,
                         timeout=600, check=True, cwd=repo)
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["accepted"] > 0, "the probe's batches must be measured"
    assert [c for c in report["compiled"] if c.startswith("channel.")] == []
