"""The warm-up compiles what a key round runs: after it, a real round compiles no classical kernel.

The check runs in a fresh interpreter with an empty numba cache, so nothing compiled earlier in
the test session (or cached on disk) can hide a kernel version the warm-up missed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from classical.reconcilers import default_reconciler
from classical.warmup import warm_up_postprocessing

_PROBE = textwrap.dedent("""
    import json, sys
    import numba.core.dispatcher as dispatcher

    from classical.reconcilers import default_reconciler
    from classical.warmup import warm_up_postprocessing
    from orchestration.config import (DEFAULT_SCENARIO, build_link, build_round_config,
                                      build_settings, load_scenario)
    from orchestration.inmemory import emulate_round
    from classical.pipeline import run_key_round

    scenario = load_scenario(DEFAULT_SCENARIO, {"round_frames": int(sys.argv[1])})
    link = build_link(scenario)
    alice, bob = build_settings(scenario, "alice"), build_settings(scenario, "bob")
    emulated = emulate_round(link, alice, bob, 0, 0, scenario.round_slots, 1)
    cfg = build_round_config(scenario)
    warm_up_postprocessing(cfg.reconciler)

    compiled = []
    original = dispatcher.Dispatcher.compile
    def recording(self, sig):
        if self.py_func.__module__.startswith("classical."):
            compiled.append(f"{self.py_func.__module__}.{self.py_func.__qualname__}{sig}")
        return original(self, sig)
    dispatcher.Dispatcher.compile = recording
    result = run_key_round(emulated.announcement, emulated.alice, emulated.bob, cfg, seed=3)

    import gc
    versions = {f"{d.py_func.__module__}.{d.py_func.__qualname__}": len(d.overloads)
                for d in gc.get_objects() if isinstance(d, dispatcher.Dispatcher)
                and d.py_func.__module__.startswith("classical.") and d.overloads}
    print(json.dumps({"compiled": compiled, "versions": versions,
                      "key_bits": None if result.alice.key is None
                      else int(result.alice.key.size)}))
""")


@pytest.mark.slow
def test_after_the_warm_up_a_real_round_compiles_no_classical_kernel(tmp_path):
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba")}
    out = subprocess.run([sys.executable, "-c", _PROBE, "3000"], env=env, capture_output=True,
                         text=True, timeout=900, check=True)
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["key_bits"], "the probe round must go all the way to a key"
    assert report["compiled"] == []
    # one compiled version per kernel: inputs reach numba read-only whether they came from the
    # wire or not (channel.arrays), so a first run compiles nothing twice
    assert report["versions"], "the probe must see the compiled kernels"
    assert {name: n for name, n in report["versions"].items() if n != 1} == {}


_CHARLES_PROBE = textwrap.dedent("""
    import json
    import numpy as np
    import numba.core.dispatcher as dispatcher
    from channel.relay import NO_CLICK_TIME, DetectionRecords
    from nodes.relay_software import bell_states, warm_up_bell_states

    warm_up_bell_states()
    compiled = []
    original = dispatcher.Dispatcher.compile
    def recording(self, sig):
        compiled.append(f"{self.py_func.__qualname__}{sig}")
        return original(self, sig)
    dispatcher.Dispatcher.compile = recording
    # records as they arrive from the wire: read-only buffers
    times = np.frombuffer(np.array([[0, 5, NO_CLICK_TIME, NO_CLICK_TIME],
                                    [0, NO_CLICK_TIME, NO_CLICK_TIME, 9000]],
                                   np.int64).tobytes(), np.int64).reshape(2, 4)
    slots = np.frombuffer(np.array([3, 7], np.int64).tobytes(), np.int64)
    patterns = np.frombuffer(bytes([0b0011, 0b1001]), np.uint8)
    bell = bell_states(DetectionRecords(slots, patterns, times), 1000.0)
    print(json.dumps({"compiled": compiled, "bell": bell.tolist()}))
""")


def test_after_charles_warm_up_the_bell_decision_compiles_nothing(tmp_path):
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba")}
    out = subprocess.run([sys.executable, "-c", _CHARLES_PROBE], env=env, capture_output=True,
                         text=True, timeout=300, check=True)
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["compiled"] == []
    assert report["bell"][1] == 0, "a pattern spread over 9 ns is outside a 1 ns window"
    assert report["bell"][0] != 0


def test_warm_up_leaves_the_global_random_state_alone():
    state = np.random.get_state()[1].copy()
    warm_up_postprocessing(default_reconciler(), key_bits=5000)
    assert np.array_equal(np.random.get_state()[1], state)
