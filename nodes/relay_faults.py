"""Charles's own software misbehaving on a game day: what he announces, rewritten.

Three fault kinds of a scenario's ``method`` (docs/game-days.md, docs/physics.md §9) are the
relay's software, not physics, and act here, in Charles's process, on what he announces:

* ``malicious_relay`` with ``mode: fake_announcements``: a share ``fraction`` of the honest
  announcements (the Bell-state successes whose slot's keyed hash is below ``fraction``) is
  replaced by as many **fake** ones, at slots drawn uniformly among the batch's slots of the
  window where his detectors gave no Bell-state success, each labelled ψ⁺ or ψ⁻ with
  probability ½. The cheat keeps the announcement rate exactly (a rate monitor sees nothing) and
  invents detections where there were none, as a relay that wants to steer the key would; the
  fakes are independent of what the users sent, so their sifted bits disagree with probability
  ½ in both bases;
* ``malicious_relay`` with ``mode: biased_postselection``: of that share of the honest
  successes, those whose Bell state is not in ``announce`` (default ``[psi_minus]``) are not
  announced;
* ``relay_firmware_bug``: ``timing_noise_ps`` adds a Gaussian of that rms, rounded to whole ps,
  to every recorded click time of the window before the coincidence-window check (so spread-out
  Bell patterns fail it), and ``spurious_fraction`` adds, for each honest announcement whose
  slot's keyed hash (another stream) is below it, one spurious announcement at a random slot of
  the batch's window that is not announced already, with a random label: on average
  ``spurious_fraction`` spurious ones per honest one.

Charles learns these faults from his own secrets only (``orchestration.secrets``: the entries of
his faults, and the ``clear_faults`` actions that end them), never from the scenario every node
reads. The windows are those of ``channel.timeline`` (whole settings frames, ``fault_slots``),
so the verdict places each fault where it acts. Everything is a pure function of the records, the
batch's slot range and Charles's seed: slot selection by a keyed hash of the slot
(``channel.rng.keyed_uniforms``), draws from a stream per fault and batch
(``channel.rng.derive_seed``), so the same run gives the same announcements. All vectorized.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from channel.relay import NO_CLICK_TIME, DetectionRecords
from channel.rng import derive_seed, keyed_uniforms
from channel.timeline import Fault, TimelineEntry, fault_slots, fault_windows
from classical.sifting import PSI_MINUS, PSI_PLUS

#: The modes of ``malicious_relay`` that are Charles's software (``intercept_resend`` is optics:
#: the channel emulator's, ``channel.relay_attack``).
SOFTWARE_MODES = ("fake_announcements", "biased_postselection")
BELL_CODES = {"psi_plus": PSI_PLUS, "psi_minus": PSI_MINUS}
DEFAULT_ANNOUNCE = ("psi_minus",)


def is_software_fault(kind: str, params: Any) -> bool:
    """Whether a fault of this kind and parameters is Charles's software misbehaving."""
    return kind == "relay_firmware_bug" or (
        kind == "malicious_relay" and params.get("mode") in SOFTWARE_MODES)


def charles_entries(entries: Sequence[TimelineEntry]) -> tuple[TimelineEntry, ...]:
    """What Charles is told of a timeline: his software's faults, and the ``clear_faults``
    actions that end one of them (so that ``fault_windows`` gives him the windows it gives
    nature and the verdict); nothing of the other faults."""
    mine = [e for e in entries if not e.is_action and is_software_fault(e.kind, e.params)]
    windows = {f.name: f for f in fault_windows(entries)}

    def ends_mine(action: TimelineEntry) -> bool:
        return action.kind == "clear_faults" and any(
            action.target in (None, e.target) and action.params.get("fault") in (None, e.name)
            and windows[e.name].start_s <= action.at_s for e in mine)

    return tuple(e for e in entries if e in mine or (e.is_action and ends_mine(e)))


@dataclass(frozen=True)
class RelayMisbehaviour:
    """Charles's software faults (``faults``, in time order) and his seed; applied per batch of
    records by ``noisy_records`` (before the Bell-state decision) and ``rewrite`` (after it)."""

    faults: tuple[Fault, ...]
    seed: int
    clock_rate_hz: float
    frame_bits: int

    @classmethod
    def from_timeline(cls, entries: Sequence[TimelineEntry], seed: int | None,
                      clock_rate_hz: float, frame_bits: int) -> RelayMisbehaviour | None:
        """None when no software fault takes effect (the honest relay)."""
        faults = tuple(f for f in fault_windows(entries) if is_software_fault(f.kind, f.params)
                       and f.end_s > f.start_s)
        if not faults:
            return None
        if seed is None:
            raise ValueError("Charles's secrets lack the seed of his faults")
        return cls(faults, seed, clock_rate_hz, frame_bits)

    def _active(self, start: int, stop: int) -> list[tuple[Fault, int, int]]:
        """The faults acting on ``[start, stop)``, each with the slots ``[lo, hi)`` it covers."""
        out = []
        for f in self.faults:
            first, end = fault_slots(f, self.clock_rate_hz, self.frame_bits)
            lo, hi = max(first, start), min(end, stop)
            if lo < hi:
                out.append((f, lo, hi))
        return out

    def _rng(self, what: str, fault: Fault, lo: int) -> np.random.Generator:
        return np.random.default_rng(derive_seed(self.seed, f"{what} {fault.name}", lo))

    def _selected(self, what: str, fault: Fault, slots: np.ndarray, share: float) -> np.ndarray:
        key = np.uint64(derive_seed(self.seed, f"{what} {fault.name}"))
        return keyed_uniforms(key, np.ascontiguousarray(slots, np.int64)) < share

    def noisy_records(self, records: DetectionRecords, start: int,
                      stop: int) -> DetectionRecords:
        """The records with each firmware bug's timing noise added to its window's clicks."""
        for f, lo, hi in self._active(start, stop):
            sigma = float(f.params.get("timing_noise_ps", 0.0) or 0.0)
            if f.kind != "relay_firmware_bug" or sigma <= 0:
                continue
            inside = (records.slot >= lo) & (records.slot < hi)
            times = records.time_ps.copy()
            noise = np.rint(self._rng("timing noise", f, lo).normal(
                0.0, sigma, size=(int(inside.sum()), times.shape[1]))).astype(np.int64)
            block = times[inside]
            clicked = block != NO_CLICK_TIME
            block[clicked] += noise[clicked]
            times[inside] = block
            records = DetectionRecords(records.slot, records.pattern, times)
        return records

    def rewrite(self, slots: np.ndarray, bell: np.ndarray, start: int,
                stop: int) -> tuple[np.ndarray, np.ndarray]:
        """What Charles announces for a batch ``[start, stop)`` whose honest decision is
        (``slots``, ``bell``): each active fault applied on its window, in time order; slots
        strictly increasing."""
        slots = np.asarray(slots, np.int64)
        bell = np.asarray(bell, np.uint8)
        for f, lo, hi in self._active(start, stop):
            inside = (slots >= lo) & (slots < hi)
            mode = f.params.get("mode")
            if f.kind == "malicious_relay" and mode == "biased_postselection":
                allowed = [BELL_CODES[b] for b in f.params.get("announce") or DEFAULT_ANNOUNCE]
                drop = inside & ~np.isin(bell, allowed)
                drop[drop] = self._selected("select", f, slots[drop],
                                            float(f.params.get("fraction", 1.0)))
                slots, bell = slots[~drop], bell[~drop]
            elif f.kind == "malicious_relay" and mode == "fake_announcements":
                drop = inside.copy()
                drop[drop] = self._selected("select", f, slots[drop],
                                            float(f.params.get("fraction", 1.0)))
                successes = slots[inside]  # the fakes go where his detectors saw no success
                slots, bell = slots[~drop], bell[~drop]
                slots, bell = self._add_random(f, "fake", slots, bell, lo, hi, int(drop.sum()),
                                               successes)
            elif f.kind == "relay_firmware_bug":
                share = float(f.params.get("spurious_fraction", 0.0) or 0.0)
                if share > 0:
                    n = int(self._selected("spurious", f, slots[inside], share).sum())
                    slots, bell = self._add_random(f, "spurious", slots, bell, lo, hi, n,
                                                   slots[inside])
        return slots, bell

    def _add_random(self, fault: Fault, what: str, slots: np.ndarray, bell: np.ndarray,
                    lo: int, hi: int, n: int, taken: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``n`` announcements at distinct slots drawn uniformly among the slots of ``[lo, hi)``
        not in ``taken`` (which holds every slot of ``slots`` in the range), each ψ⁺ or ψ⁻ with
        probability ½, merged in slot order.

        A uniformly ordered draw without replacement of ``n`` + ``taken.size`` positions, those
        in ``taken`` removed, the first ``n`` kept: a uniform ``n``-subset of the free slots."""
        if n == 0:
            return slots, bell
        rng = self._rng(what, fault, lo)
        size = hi - lo
        if n + taken.size > size:
            raise ValueError(f"{fault.name}: {n} {what} announcements do not fit in the "
                             f"{size - taken.size} free slots of [{lo}, {hi})")
        drawn = lo + rng.choice(size, size=min(size, n + taken.size), replace=False)
        new = drawn[~np.isin(drawn, taken)][:n].astype(np.int64)
        labels = np.where(rng.random(n) < 0.5, PSI_PLUS, PSI_MINUS).astype(np.uint8)
        all_slots = np.concatenate([slots, new])
        order = np.argsort(all_slots, kind="stable")
        return all_slots[order], np.concatenate([bell, labels])[order]
