"""The standard device parameters of the MDI-QKD literature, the defaults everywhere.

Lo, Curty & Qi (PRL 108, 130503, 2012), Ma & Razavi (PRA 86, 062319, 2012, Table I) and Xu et al.
(NJP 15, 113007, 2013, Table 1) all use this set; docs/physics.md §1 lists it. Every value can be
overridden (scenario fields, `mdiqkd keyrate` options). The error-correction inefficiency f of the
same set is a post-processing figure: ``classical.estimation.DEFAULT_EC_INEFFICIENCY``.
"""

#: Detector efficiency η_d.
DETECTOR_EFFICIENCY = 0.145
#: Dark-count (background) probability per detector per pulse, p_d.
DARK_COUNT_PROBABILITY = 3e-6
#: Misalignment e_d of the papers' flip model.
MISALIGNMENT = 0.015
#: Fiber attenuation α in dB/km.
ATTENUATION_DB_PER_KM = 0.2
