"""`mdiqkd simulate`: one fixed setting through a sampler, measured beside the analytic model."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from channel.analytic import exact_class_statistics
from channel.fiber import Fiber, linear_rotation
from channel.link import Link
from channel.relay import RelayOptics
from channel.rng import derive_seed
from channel.samplers import sample
from channel.settings import BASIS_NAMES, SettingsGenerator, SettingsPlan
from channel.source import Source
from classical.sifting import bob_flip
from nodes.relay_software import BELL_OF_PATTERN, DEFAULT_COINCIDENCE_WINDOW_PS, bell_states
from orchestration.options import SimulateOptions


@dataclass(frozen=True)
class ClassResult:
    basis: str
    mu_a: float
    mu_b: float
    slots: int
    detections: int
    errors: int
    Q: float
    E: float
    Q_analytic: float
    E_analytic: float
    z_Q: float
    z_E: float


def binomial_z(observed: int, trials: int, p: float) -> float:
    """(observed − n p) / √(n p (1 − p)); 0 when the variance vanishes and the counts agree."""
    var = trials * p * (1 - p)
    if var <= 0:
        return 0.0 if observed == trials * p else math.inf
    return (observed - trials * p) / math.sqrt(var)


def build_fixed_link(o: SimulateOptions) -> tuple[Link, SettingsGenerator, SettingsGenerator]:
    basis = BASIS_NAMES.index(o.basis)
    plan_a, plan_b = SettingsPlan.fixed(o.mu_a, basis), SettingsPlan.fixed(o.mu_b, basis)
    link = Link(
        source_a=Source(plan_a),
        # The flip model acts on one encoder: sifted errors become E + e_d(1 − 2E).
        source_b=Source(plan_b, bit_flip_probability=o.misalignment),
        fiber_a=Fiber(o.distance_a_km, o.attenuation, rotation=linear_rotation(o.rotation_a)),
        fiber_b=Fiber(o.distance_b_km, o.attenuation, rotation=linear_rotation(o.rotation_b)),
        relay=RelayOptics.uniform(o.eta_d, o.dark_count),
        gamma_override=o.gamma,
    )
    alice = SettingsGenerator(plan_a, derive_seed(o.seed, "alice_settings"))
    bob = SettingsGenerator(plan_b, derive_seed(o.seed, "bob_settings"))
    return link, alice, bob


def simulate(o: SimulateOptions) -> dict:
    link, alice, bob = build_fixed_link(o)
    basis = BASIS_NAMES.index(o.basis)
    out = sample(link, alice, bob, 0, o.slots, o.seed, o.sampler)
    bell = bell_states(out.records, DEFAULT_COINCIDENCE_WINDOW_PS)
    success = bell != 0
    slots = out.records.slot[success]
    sa, sb = alice.settings_at(slots), bob.settings_at(slots)
    bits_b = sb.bit ^ bob_flip(sb.basis, bell[success])
    detections = int(success.sum())
    errors = int((sa.bit != bits_b).sum())
    stats = exact_class_statistics(
        basis, o.mu_a, o.mu_b, link.fiber_a.transmittance, link.fiber_b.transmittance,
        link.fiber_a.static_unitary, link.fiber_b.static_unitary, link.relay.efficiencies,
        link.relay.dark_count_probabilities, o.gamma, o.misalignment,
        bell_of_pattern=BELL_OF_PATTERN)
    result = ClassResult(
        basis=o.basis, mu_a=o.mu_a, mu_b=o.mu_b, slots=o.slots, detections=detections,
        errors=errors, Q=detections / o.slots, E=errors / detections if detections else 0.0,
        Q_analytic=stats.gain, E_analytic=stats.error_rate,
        z_Q=binomial_z(detections, o.slots, stats.gain),
        z_E=binomial_z(errors, detections, stats.error_rate) if detections else 0.0)
    return {"sampler": o.sampler, "seed": o.seed, "classes": [asdict(result)]}
