"""What Alice and Bob share: turning their own settings and an announcement into a LocalView."""

from __future__ import annotations

import numpy as np

from channel.settings import SettingsGenerator
from classical.messages import Announcement
from classical.rounds import LocalView


def frame_sent_counts(settings: SettingsGenerator, start_slot: int, stop_slot: int) -> np.ndarray:
    """(frames, combos) pulses sent per class in each frame of a frame-aligned round."""
    size = settings.frame_size
    if start_slot % size or stop_slot % size or stop_slot <= start_slot:
        raise ValueError(f"a round must cover whole frames of {size} slots, got "
                         f"[{start_slot}, {stop_slot})")
    return np.array([settings.frame_counts(f) for f in range(start_slot // size,
                                                             stop_slot // size)], dtype=np.int64)


def local_view(settings: SettingsGenerator, ann: Announcement) -> LocalView:
    s = settings.settings_at(ann.slots)
    return LocalView(s.basis, s.bit, s.intensity,
                     frame_sent_counts(settings, ann.start_slot, ann.stop_slot))
