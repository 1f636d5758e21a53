"""The closed forms the key-rate code evaluates, transcribed literally into 50-digit mpmath.

A reference for the float64 code, not a second implementation of its tricks: every formula is
written as printed (Ma & Razavi, PRA 86, 062319 (2012), App. A–B; Xu, Curty, Qi & Lo, NJP 15,
113007 (2013), Eqs. 6–7; Lo, Curty & Qi, PRL 108, 130503 (2012), Eq. 1), subtractions of nearly
equal numbers included: with 50 digits they leave more than 30 correct digits for every intensity
and distance the tests use, far more than the 1e-6 to 1e-13 the tests ask of the float64 code.
Inputs are converted from the same float64 values the code receives.
"""

from __future__ import annotations

import mpmath as mp

DIGITS = 50
_CTX = mp.MPContext()
_CTX.dps = DIGITS
_f = _CTX.mpf


def transmittance(distance_km: float, detector_efficiency: float = 0.145,
                  attenuation_db_per_km: float = 0.2) -> mp.mpf:
    """η of one arm (half the total distance), detector efficiency included."""
    return _f(detector_efficiency) * _CTX.power(
        10, -_f(distance_km) / 2 * _f(attenuation_db_per_km) / 10)


def z_basis(eta_a, eta_b, mu_a, mu_b, pd, ed):
    """(Q_Z, E_Z·Q_Z), MR App. B."""
    c = _CTX
    pd, ed = _f(pd), _f(ed)
    ma, mb = _f(eta_a) * _f(mu_a), _f(eta_b) * _f(mu_b)
    mu_p = ma + mb
    x = c.sqrt(ma * mb) / 2
    q_c = 2 * (1 - pd) ** 2 * c.exp(-mu_p / 2) * (1 - (1 - pd) * c.exp(-ma / 2)) * (
        1 - (1 - pd) * c.exp(-mb / 2))
    q_e = 2 * pd * (1 - pd) ** 2 * c.exp(-mu_p / 2) * (c.besseli(0, 2 * x)
                                                        - (1 - pd) * c.exp(-mu_p / 2))
    return q_c + q_e, ed * q_c + (1 - ed) * q_e


def x_basis(eta_a, eta_b, mu_a, mu_b, pd, ed):
    """(Q_X, E_X·Q_X), MR App. B."""
    c = _CTX
    pd, ed = _f(pd), _f(ed)
    ma, mb = _f(eta_a) * _f(mu_a), _f(eta_b) * _f(mu_b)
    mu_p = ma + mb
    x = c.sqrt(ma * mb) / 2
    y = (1 - pd) * c.exp(-mu_p / 4)
    q = 2 * y**2 * (1 + 2 * y**2 - 4 * y * c.besseli(0, x) + c.besseli(0, 2 * x))
    return q, q / 2 - 2 * (_f(0.5) - ed) * y**2 * (c.besseli(0, 2 * x) - 1)


def single_photon(eta_a, eta_b, pd, ed):
    """(Y11, e11^X), MR App. A."""
    pd, ed, ea, eb = _f(pd), _f(ed), _f(eta_a), _f(eta_b)
    y11 = (1 - pd) ** 2 * (ea * eb / 2 + (2 * ea + 2 * eb - 3 * ea * eb) * pd
                           + 4 * (1 - ea) * (1 - eb) * pd**2)
    return y11, (y11 / 2 - (_f(0.5) - ed) * (1 - pd) ** 2 * ea * eb / 2) / y11


def _tilde(gains, ints):
    return [[gains[i][j] * _CTX.exp(_f(ints[i]) + _f(ints[j])) for j in range(3)]
            for i in range(3)]


def y11_lower(ints, gains):
    """Xu13 Eq. 6 for the same intensities (μ, ν, ω) on both sides (no swap needed)."""
    mu, nu, om = (_f(v) for v in ints)
    qt = _tilde(gains, ints)

    def g(s):
        return qt[s][s] + qt[2][2] - qt[s][2] - qt[2][s]

    num = (mu**2 - om**2) * (mu - om) * g(1) - (nu**2 - om**2) * (nu - om) * g(0)
    return num / ((mu - om) * (mu - om) * (nu - om) * (nu - om) * (mu - nu))


def e11_upper(ints, error_gains, y11_x):
    """Xu13 Eq. 7, clipped to [0, 1/2]; 1/2 when the yield bound is not positive."""
    if y11_x <= 0:
        return _f(0.5)
    _, nu, om = (_f(v) for v in ints)
    eqt = _tilde(error_gains, ints)
    value = (eqt[1][1] + eqt[2][2] - eqt[1][2] - eqt[2][1]) / ((nu - om) ** 2 * y11_x)
    return min(max(value, _f(0)), _f(0.5))


def entropy(p):
    p = min(max(p, _f(0)), _f(1))
    if p in (0, 1):
        return _f(0)
    return -p * _CTX.log(p, 2) - (1 - p) * _CTX.log(1 - p, 2)


def key_rate_terms(distance_km, mu, nu, omega, decoys, pd=3e-6, ed=0.015, f=1.16):
    """(R, scale) of LCQ Eq. 1 with fixed intensities; ``decoys`` is "3" or "infinite".

    ``scale`` = Q11 [1 − h(e11)] + f Q_Z h(E_Z), the sum of the magnitudes of the two terms whose
    difference is R: the float64 rounding of that difference is a multiple of it.
    """
    eta = transmittance(distance_km)
    q_z, eq_z = z_basis(eta, eta, mu, mu, pd, ed)
    if decoys == "infinite":
        y11, e11 = single_photon(eta, eta, pd, ed)
    else:
        ints = (mu, nu, omega)
        qz = [[z_basis(eta, eta, a, b, pd, ed)[0] for b in ints] for a in ints]
        qx = [[x_basis(eta, eta, a, b, pd, ed) for b in ints] for a in ints]
        y11 = y11_lower(ints, qz)
        y11_x = y11_lower(ints, [[v[0] for v in row] for row in qx])
        e11 = e11_upper(ints, [[v[1] for v in row] for row in qx], y11_x)
    mu = _f(mu)
    gain = mu * mu * _CTX.exp(-2 * mu) * max(y11, _f(0)) * (1 - entropy(e11))
    cost = _f(f) * q_z * entropy(eq_z / q_z)
    return gain - cost, gain + cost


def reach(mu, nu, omega, decoys, lo_km, hi_km, tolerance_km=1e-6):
    """The zero of the rate in [lo_km, hi_km] (positive at lo, negative at hi), by bisection."""
    def rate(d):
        return key_rate_terms(d, mu, nu, omega, decoys)[0]

    if not rate(lo_km) > 0 > rate(hi_km):
        raise ValueError(f"no sign change of the rate in [{lo_km}, {hi_km}] km")
    while hi_km - lo_km > tolerance_km:
        mid = (lo_km + hi_km) / 2
        lo_km, hi_km = (mid, hi_km) if rate(mid) > 0 else (lo_km, mid)
    return (lo_km + hi_km) / 2
