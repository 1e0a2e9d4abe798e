"""Pause generators: when a stream endpoint idles (no ``valid``) or applies backpressure (no ``ready``).

A pause generator is any iterator of booleans. A :class:`~haneul.sim.cocotb.streams.StreamDriver` draws one value in
every cycle in which it could start a new beat: ``True`` keeps ``valid`` low for that cycle (an idle cycle). A
:class:`~haneul.sim.cocotb.streams.StreamMonitor` draws one value in every cycle: ``True`` drives ``ready`` low
(backpressure). ``None`` means "never pause". Plain iterators work too, e.g. ``itertools.cycle([0, 0, 1])``.

All random generators take a ``random.Random`` (or a seed) so that a test is reproducible from its seed.
"""

import itertools
import random

__all__ = ["never", "always", "pattern", "random_pauses", "bursts", "TRAFFIC"]


def _rng(rng):
    return rng if isinstance(rng, random.Random) else random.Random(rng)


def never():
    """Never pause (full rate)."""
    return itertools.repeat(False)


def always():
    """Always pause (a stalled stream); useful to hold a port off until the generator is replaced."""
    return itertools.repeat(True)


def pattern(*bits):
    """Repeat a fixed pattern, e.g. ``pattern(0, 0, 1)``: two active cycles, then one pause."""
    if not bits:
        raise ValueError("A pause pattern needs at least one element")
    return itertools.cycle([bool(bit) for bit in bits])


def random_pauses(probability, rng=None):
    """Pause each cycle independently with ``probability`` (0 <= probability < 1)."""
    if not 0 <= probability < 1:
        raise ValueError(f"Pause probability must be in [0, 1), not {probability!r}")
    rng = _rng(rng)
    while True:
        yield rng.random() < probability


def bursts(mean_active, mean_paused, rng=None):
    """Alternate runs of active and paused cycles of geometrically distributed lengths.

    Long stalls and long bursts exercise full pipelines and draining that independent per-cycle pauses rarely reach.
    """
    if mean_active < 1 or mean_paused < 1:
        raise ValueError("Mean run lengths must be at least 1 cycle")
    rng = _rng(rng)
    while True:
        for paused, mean in ((False, mean_active), (True, mean_paused)):
            length = 1
            while rng.random() > 1 / mean:
                length += 1
            yield from itertools.repeat(paused, length)


def _smooth(rng):
    return None


def _light(rng):
    return random_pauses(0.2, rng)


def _heavy(rng):
    return random_pauses(0.6, rng)


def _bursty(rng):
    return bursts(8, 6, rng)


#: Named traffic patterns for parametrized tests: ``TRAFFIC[name](rng)`` gives a pause generator (or ``None``).
TRAFFIC = {
    "smooth": _smooth,
    "light":  _light,
    "heavy":  _heavy,
    "bursty": _bursty,
}
