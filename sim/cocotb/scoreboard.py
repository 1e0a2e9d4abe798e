"""In-order scoreboard: compares what the DUT produced with what the reference model predicted.

::

    sb = Scoreboard("result")
    sb.expect_many(model_outputs)            # from numpy / the golden model
    monitor = StreamMonitor(dut, "result", dut.clk, layout, callback=sb.observe)
    ...
    await sb.wait_done(dut.clk, timeout_cycles=10_000)
    sb.check(count=len(model_outputs))       # raises AssertionError on any mismatch, missing or extra beat

Every comparison is counted; :meth:`Scoreboard.check` fails if nothing was compared, if beats are still outstanding,
if the DUT produced beats nobody expected, or if the number of matches differs from ``count``. So a scoreboard that
silently compared nothing cannot pass.
"""

import logging

from cocotb.triggers import RisingEdge

__all__ = ["Scoreboard", "normalize"]


def normalize(value):
    """Plain Python form of a value for comparison and printing: numpy arrays and scalars become lists and ints."""
    if isinstance(value, dict):
        return {key: normalize(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [normalize(item) for item in value]
    if hasattr(value, "tolist"):  # numpy arrays and numpy scalars
        return normalize(value.tolist())
    return value


def _diff(expected, got, path=""):
    """Paths where two normalized values differ, e.g. ``['.data[3]: 17 != 18']`` (at most 8)."""
    if isinstance(expected, dict) and isinstance(got, dict):
        out = []
        for key in sorted(expected.keys() | got.keys(), key=str):
            out += _diff(expected.get(key), got.get(key), f"{path}.{key}")
        return out[:8]
    if isinstance(expected, list) and isinstance(got, list) and len(expected) == len(got):
        out = []
        for index, (e, g) in enumerate(zip(expected, got)):
            out += _diff(e, g, f"{path}[{index}]")
        return out[:8]
    return [] if expected == got else [f"{path or 'value'}: expected {expected!r}, got {got!r}"]


class Scoreboard:
    """Compares observed items with expected items, in order.

    Parameters
    ----------
    name : str
        Used in messages.
    compare : callable, optional
        ``compare(expected, got) -> bool`` on normalized values. Default: equality.
    max_reported : int
        Mismatches logged in detail (all are counted).

    Attributes
    ----------
    matched : int
        Items observed that equal the expected item.
    mismatched : list of (int, object, object)
        ``(index, expected, got)`` of every mismatch.
    unexpected : list
        Items observed when nothing was expected.
    """

    def __init__(self, name="scoreboard", *, compare=None, max_reported=10):
        self.name = name
        self.compare = compare
        self.max_reported = max_reported
        self.log = logging.getLogger(f"cocotb.tb.{name}")
        self._expected = []
        self._next = 0           # index of the next expected item to compare
        self.matched = 0
        self.mismatched = []
        self.unexpected = []

    # Feeding ---------------------------------------------------------------------------------------------------

    def expect(self, item):
        """Add one expected item."""
        self._expected.append(normalize(item))

    def expect_many(self, items):
        """Add several expected items, in order."""
        for item in items:
            self.expect(item)

    def observe(self, item):
        """Compare one observed item with the oldest outstanding expected item (use as a monitor callback)."""
        got = normalize(item)
        if self._next >= len(self._expected):
            self.unexpected.append(got)
            self.log.error("%s: unexpected item #%d: %r", self.name, self._next, got)
        else:
            index, expected = self._next, self._expected[self._next]
            same = self.compare(expected, got) if self.compare is not None else expected == got
            if same:
                self.matched += 1
            else:
                self.mismatched.append((index, expected, got))
                if len(self.mismatched) <= self.max_reported:
                    self.log.error("%s: mismatch at item %d: %s", self.name, index, "; ".join(_diff(expected, got)))
        self._next += 1

    # Status ----------------------------------------------------------------------------------------------------

    @property
    def expected(self):
        """Items expected so far."""
        return len(self._expected)

    @property
    def observed(self):
        """Items observed so far."""
        return self._next

    @property
    def outstanding(self):
        """Expected items not yet observed."""
        return max(0, len(self._expected) - self._next)

    async def wait_done(self, clock, timeout_cycles, *, stall_cycles=None):
        """Wait until every expected item has been observed.

        Gives up after ``timeout_cycles`` cycles of ``clock`` in total, or after ``stall_cycles`` cycles in a row
        without a new item (a hung or item-dropping DUT then fails fast). Giving up does not raise here;
        :meth:`check` reports the missing items.
        """
        edge = RisingEdge(clock)
        last_seen, quiet = self.observed, 0
        for _ in range(timeout_cycles):
            if not self.outstanding:
                return
            await edge
            if self.observed != last_seen:
                last_seen, quiet = self.observed, 0
            else:
                quiet += 1
                if stall_cycles is not None and quiet >= stall_cycles:
                    self.log.error("%s: no item for %d cycles with %d of %d outstanding",
                                   self.name, stall_cycles, self.outstanding, self.expected)
                    return
        if self.outstanding:
            self.log.error("%s: timed out after %d cycles with %d of %d items outstanding",
                           self.name, timeout_cycles, self.outstanding, self.expected)

    def check(self, count=None):
        """Raise :exc:`AssertionError` unless every expected item was observed and matched, and nothing else.

        Parameters
        ----------
        count : int, optional
            The number of matches required (guards against an empty or truncated expectation list).
        """
        problems = []
        if self.mismatched:
            first = self.mismatched[0]
            problems.append(f"{len(self.mismatched)} mismatch(es); first at item {first[0]}: "
                            + "; ".join(_diff(first[1], first[2])))
        if self.outstanding:
            problems.append(f"{self.outstanding} of {self.expected} expected item(s) never observed "
                            f"(first missing: item {self._next})")
        if self.unexpected:
            problems.append(f"{len(self.unexpected)} unexpected item(s) after the {self.expected} expected")
        if count is not None and self.matched != count:
            problems.append(f"{self.matched} item(s) matched, {count} required")
        if self.matched == 0 and not problems:
            problems.append("nothing was compared")
        if problems:
            raise AssertionError(f"{self.name}: " + "; ".join(problems))
        self.log.info("%s: %d item(s) matched", self.name, self.matched)
