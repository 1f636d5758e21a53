"""A round the pre-check stops gives no key, so its key-class bits may be disclosed: with
``RoundConfig.disclose_unkeyed`` (the polarization loop runs) both users exchange them
(``UnkeyedBits``) and report the Z errors they show, which must be exactly the errors
reconciliation finds in the same round when it does give key."""

from __future__ import annotations

import dataclasses

import pytest

from classical.pipeline import run_key_round
from orchestration.inmemory import round_config
from tests.metro import shared_metro


def _round(disclose: bool, qber_prior: float):
    users, emulated = shared_metro()
    cfg = dataclasses.replace(round_config(*users), disclose_unkeyed=disclose)
    return run_key_round(emulated.announcement, emulated.alice, emulated.bob, cfg, 3,
                         qber_prior=qber_prior)


def test_a_round_without_key_discloses_its_key_bits_and_counts_their_errors():
    keyed = _round(True, 0.01)  # a prior that lets the round reach reconciliation
    assert keyed.alice.report.get("corrected_bits") is not None
    assert "disclosed_z_errors" not in keyed.alice.report  # a keyed round discloses nothing
    stopped = _round(True, 0.3)  # a prior of 30 % leaves no key: the pre-check stops it
    for outcome in (stopped.alice, stopped.bob):
        assert outcome.aborted and "corrected_bits" not in outcome.report
        assert outcome.report["disclosed_key_bits"] == keyed.alice.report["key_bits_raw"]
        # the same sifted bits: the disclosed errors are the ones Cascade corrects
        assert outcome.report["disclosed_z_errors"] == keyed.alice.report["corrected_bits"] > 0
        obs = outcome.observations
        assert obs is not None
        key = (*obs.key_intensity, 0)
        assert obs.errors[key].sum() == outcome.report["disclosed_z_errors"]
    assert stopped.alice.abort_reason == stopped.bob.abort_reason


def test_without_the_loop_nothing_is_disclosed():
    stopped = _round(False, 0.3)
    assert stopped.alice.aborted and stopped.bob.aborted
    assert "disclosed_z_errors" not in stopped.alice.report
    assert stopped.alice.abort_reason == _round(True, 0.3).alice.abort_reason


class _LyingBob:
    """Bob's reconciler, reporting ``corrected`` corrected bits whatever it corrected."""

    def __init__(self, real, corrected):
        self.real, self.corrected = real, corrected

    def __getattr__(self, name):
        return getattr(self.real, name)

    def bob(self, *args, **kwargs):
        return dataclasses.replace(self.real.bob(*args, **kwargs), corrected_bits=self.corrected)


@pytest.mark.parametrize("corrected", [-1, 10**9])
def test_alice_refuses_a_corrected_count_no_key_can_have(corrected):
    # Bob's VerifyRequest.corrected_bits sets QBER_Z in Alice's final estimate and her
    # calibration: a negative count, or more than the key's bits, ends the round with a
    # protocol error, never the node (it used to raise out of the round: negative errors)
    users, emulated = shared_metro()
    cfg = round_config(*users)
    cfg = dataclasses.replace(cfg, reconciler=_LyingBob(cfg.reconciler, corrected))
    result = run_key_round(emulated.announcement, emulated.alice, emulated.bob, cfg, 3,
                           qber_prior=0.01)
    assert result.alice.aborted and "corrected bits" in result.alice.abort_reason
    assert result.alice.key is None and result.bob.key is None
